"""Search corpus and tools: pages rendered from a database, deterministic in the seed, long enough to fill a small
context, with near-duplicate distractors; search/open/find return results or error results, never raise."""

from __future__ import annotations

import pytest

from toolgym.domains import load_domain
from toolgym.envs.environment import EnvironmentRecord, base_database
from toolgym.envs.families import env_title, open_env
from toolgym.search.corpus import Corpus, CorpusConfig, corpus_for, parse_page_text
from toolgym.search.tools import SearchEnvironment
from toolgym.tasks.model import Difficulty, Task, UserProfile


def record(**corpus) -> EnvironmentRecord:
    return EnvironmentRecord(id="bank-search", family="search", domain="bank", tools=[], params={"corpus": corpus})


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return corpus_for(record())


def test_every_row_has_a_page_whose_text_states_its_facts_and_links(corpus):
    db = base_database(corpus.domain, 0)
    account = dict(db.execute('SELECT * FROM "account" WHERE "id" = 7').fetchone())
    page = parse_page_text(corpus.text(corpus.page_of("account", 7)))
    assert page.entity == "account"
    assert page.facts["account number"] == account["account_number"]
    assert page.facts["balance"] == f"{account['balance']:.2f}"
    assert corpus.page_of("branch", account["branch_id"]) in page.facts["branch"]
    branch = parse_page_text(corpus.text(corpus.page_of("branch", account["branch_id"])))
    assert corpus.page_of("account", 7) in branch.backlinks[("accounts", "branch")]
    n_rows = sum(db.execute(f'SELECT COUNT(*) FROM "{e}"').fetchone()[0] for e in corpus.domain.entities)
    stats = corpus.stats()
    assert stats["pages"] - stats["distractors"] == n_rows


def test_same_seed_same_corpus_other_seed_other_page_ids(corpus):
    rebuilt = Corpus(load_domain("bank"), base_database(load_domain("bank"), 0), CorpusConfig())
    other = Corpus(load_domain("bank"), base_database(load_domain("bank"), 0), CorpusConfig(seed=1))
    for row_id in (1, 50, 300):
        page = corpus.page_of("customer", row_id)
        assert rebuilt.page_of("customer", row_id) == page and rebuilt.text(page) == corpus.text(page)
    assert [other.page_of("customer", i) for i in (1, 50, 300)] != [corpus.page_of("customer", i) for i in (1, 50, 300)]


def test_pages_are_long_and_a_few_fill_a_small_context(corpus):
    stats = corpus.stats()
    assert stats["mean_chars"] > 1000
    eight_pages = sum(len(corpus.text(corpus.page_of("account", i))) for i in range(1, 9))
    assert eight_pages / 4 > 2000  # tokens at ~4 characters a token: 8 pages overflow a 2K-token context
    assert max(corpus.page(corpus.page_of("branch", i))[1] for i in range(1, 20)) >= 2


def test_distractors_have_similar_titles_and_no_row(corpus):
    stats = corpus.stats()
    assert 0.15 < stats["distractors"] / stats["pages"] < 0.3
    distractors = [(p, facts) for p, row, facts in corpus.pages_of("customer") if row is None]
    real_names = {facts["name"] for _, row, facts in corpus.pages_of("customer") if row is not None}
    page, facts = distractors[0]
    assert facts["name"] not in real_names
    assert any(facts["name"].startswith(name) for name in real_names)


def test_search_ranks_the_page_named_in_the_query_first(corpus):
    db = base_database(corpus.domain, 0)
    number = db.execute('SELECT "account_number" FROM "account" WHERE "id" = 3').fetchone()[0]
    results = corpus.search(f"account {number}", 5)
    assert results[0]["page"] == corpus.page_of("account", 3)
    assert len(results) == 5 and all(r["title"] and "snippet" in r for r in results)


def test_tools_return_results_or_error_results():
    env = SearchEnvironment(corpus_for(record()), "bank")
    names = [t["function"]["name"] for t in env.openai_tools()]
    assert names == ["search", "open", "find"]
    assert env.openai_tools()[0]["function"]["parameters"]["required"] == ["query"]
    hits = env.call("search", {"query": 'Riverton "savings" AND (NEAR OR', "k": 3})
    assert hits.ok and len(hits.content["results"]) == 3
    page = hits.content["results"][0]["page"]
    opened = env.call("open", {"page": page})
    assert opened.ok and opened.content["part"] == 1 and opened.content["text"].startswith(opened.content["title"])
    assert page in env.read_pages
    found = env.call("find", {"page": page, "text": "CITY of this"})
    assert found.ok and all("city" in m["line"].lower() for m in found.content["matches"])
    assert found.content["matches"]
    for name, args, message in [("open", {"page": page, "part": 99}, "part"), ("open", {"page": "p99999"}, "no page"),
                                ("search", {"query": "x", "k": 0}, "bad arguments"), ("search", {}, "query"),
                                ("delete", {}, "unknown tool"), ("find", {"page": page, "text": "x", "y": 1}, "y")]:
        result = env.call(name, args)
        assert not result.ok and message in result.error


def test_family_rebuilds_the_corpus_from_the_record():
    task = Task(id="t", domain="bank", seed=0, env=record(seed=3), instruction="?", user=UserProfile(), gold_chain=[],
                expected_changes=[], expected_state_hash="", required_answers=[],
                difficulty=Difficulty(chain_length=0, n_writes=0, n_env_tools=3, n_targets=0))
    env = open_env(task.env)
    assert isinstance(env, SearchEnvironment) and not hasattr(env, "env")
    assert env.corpus is corpus_for(record(seed=3)) and env.corpus.config.seed == 3
    assert "Retail bank" in env_title(task, env)
