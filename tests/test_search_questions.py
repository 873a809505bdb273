"""Multi-hop question synthesis: every accepted question has exactly one answer in its database, the shortcut
filters catch a planted one-hop question, the judge catches broken questions, the gold solver passes every task
through the ordinary evaluation loop and a policy that never opens a page passes none."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from toolgym.agent.rollout import RolloutConfig
from toolgym.cli import app
from toolgym.domains import load_domain
from toolgym.domains.database import decode_row
from toolgym.envs.sample import EnvironmentSampler
from toolgym.eval.runner import evaluate
from toolgym.jsonl import read_jsonl
from toolgym.policy.scripted import GoldPolicy
from toolgym.search.corpus import corpus_for
from toolgym.search.policies import snippet_policy
from toolgym.search.questions import Constraint, Hop, Question
from toolgym.search.roles import judge, one_hop_answer, search_shortcut, solve
from toolgym.search.synthesize import FILTERS, synthesize_search_tasks
from toolgym.search.verify import states_fact
from toolgym.tasks.model import Task
from toolgym.tasks.text import fmt

DOMAINS = ("bank", "clinic")


@pytest.fixture(scope="module")
def synthesized():
    """Per domain: (environment, tasks, filter counts) for 9 questions over one sampled environment."""
    out = {}
    for name in DOMAINS:
        env = next(EnvironmentSampler(load_domain(name), seed=5).sample_many(1))
        tasks, stats = synthesize_search_tasks(env, 9, seed=11)
        out[name] = (env, tasks, stats)
    return out


def question(task: Task) -> Question:
    return Question.model_validate(task.env.params["question"])


def rows(env, entity: str) -> list[dict]:
    spec = env.domain.entities[entity]
    return [decode_row(spec, r) for r in env.conn.execute(f'SELECT * FROM "{entity}"')]


def test_every_accepted_question_has_exactly_one_answer_in_its_database(synthesized):
    for env, tasks, _ in synthesized.values():
        assert len(tasks) == 9
        for task in tasks:
            q = question(task)
            assert 2 <= q.n_hops <= 4 and task.instruction == q.text
            first = q.hops[0]
            [row] = [r for r in rows(env, first.entity) if all(c.holds(r[c.field]) for c in first.constraints)]
            for hop in q.hops[1:]:
                if hop.direction == "forward":
                    [row] = [r for r in rows(env, hop.entity) if r["id"] == row[hop.via]]
                else:
                    [row] = [r for r in rows(env, hop.entity) if r[hop.via] == row["id"]
                             and all(c.holds(r[c.field]) for c in hop.constraints)]
            assert task.required_answers == [fmt(row[q.answer_field])]


def test_filter_counts_are_consistent_and_every_stage_is_counted(synthesized):
    for _, tasks, stats in synthesized.values():
        for before, after in zip(FILTERS, FILTERS[1:]):
            assert stats.reached[after] == stats.reached[before] - stats.rejected[before]
        assert stats.reached["judge"] - stats.rejected["judge"] == stats.accepted == len(tasks)
        assert sum(stats.accepted_by_hops.values()) == len(tasks) and set(stats.accepted_by_hops) == {2, 3, 4}
        assert stats.rejected["description"] > 0 and 0 <= stats.rejection_rate("solver") < 1


def test_same_seed_same_questions(synthesized):
    env, tasks, _ = synthesized["bank"]
    again, _ = synthesize_search_tasks(env, 3, seed=11)
    assert [t.instruction for t in again] == [t.instruction for t in tasks[:3]]


def test_shortcut_filters_reject_a_planted_one_hop_question(synthesized):
    env, tasks, _ = synthesized["bank"]
    corpus = corpus_for(tasks[0].env)
    account = rows(env, "account")[41]
    planted = Question(id="planted", domain="bank", answer_field="balance", answer=fmt(account["balance"]),
                       text=f"What is the balance of account {account['account_number']}?",
                       hops=[Hop(entity="account", direction="start", row_id=account["id"],
                                 page=corpus.page_of("account", account["id"]),
                                 constraints=[Constraint(field="account_number", op="eq",
                                                         value=account["account_number"])])])
    assert search_shortcut(corpus, planted)
    assert one_hop_answer(corpus, planted) == planted.answer
    for task in tasks:
        assert not search_shortcut(corpus, question(task))


def test_judge_and_solver_catch_broken_questions(synthesized):
    env, tasks, _ = synthesized["clinic"]
    corpus = corpus_for(tasks[0].env)
    q = question(tasks[0])
    assert judge(env.domain, env.conn, corpus, q) == []
    assert solve(corpus, q) == q.answer
    wrong = q.model_copy(update={"answer": q.answer + "9"})
    assert any("answer should be" in p for p in judge(env.domain, env.conn, corpus, wrong))
    vague = q.model_copy(update={"hops": [q.hops[0].model_copy(update={"constraints": q.hops[0].constraints[:1]}),
                                          *q.hops[1:]]})
    vague.hops[0].constraints[0] = Constraint(field="status", op="eq", value="no such status")
    assert any("start description" in p for p in judge(env.domain, env.conn, corpus, vague))
    assert solve(corpus, vague) is None


def test_gold_solver_passes_every_task_and_a_policy_that_opens_nothing_passes_none(synthesized):
    tasks = [t for _, ts, _ in synthesized.values() for t in ts]
    gold = evaluate(GoldPolicy.from_tasks(tasks), tasks, config=RolloutConfig(max_turns=60))
    assert all(t.passed for t in gold.trajectories), [t.verdict for t in gold.trajectories if not t.passed]
    snippets = evaluate(snippet_policy(), tasks, config=RolloutConfig(max_turns=4))
    assert not any(t.passed for t in snippets.trajectories)
    assert all("never opened" in t.verdict for t in snippets.trajectories)


def test_answers_are_normalized_like_every_task_and_dates_may_name_their_month():
    assert states_fact("1234.50", "It is 1,234.5 dollars.") and states_fact("Item Never Arrived", "item  never arrived")
    assert states_fact("2021-03-04", "It was filed on March 4, 2021.") and states_fact("2021-03-04", "4 March 2021")
    assert not states_fact("2021-03-04", "March 5, 2021") and not states_fact("12.5", "125")


def test_cli_synth_writes_tasks_and_reports_every_filter(tmp_path):
    out = tmp_path / "search.jsonl"
    result = CliRunner().invoke(app, ["search", "synth", "-d", "bank", "-d", "clinic", "--n", "6", "--per-env", "2",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    tasks = list(read_jsonl(out, Task))
    assert len(tasks) == 6 and {t.domain for t in tasks} == {"bank-search", "clinic-search"}
    assert all(t.env.family == "search" for t in tasks)
    stats = (tmp_path / "search.stats.json").read_text()
    assert all(f'"{f}"' in stats for f in FILTERS)
    bad = CliRunner().invoke(app, ["search", "synth", "-d", "atlantis", "--n", "2", "--out", str(out)])
    assert bad.exit_code != 0 and "unknown domain" in bad.output and "Traceback" not in bad.output
    swept = CliRunner().invoke(app, ["search", "sweep", "--tasks", str(out), "--n", "2", "--threshold", "3000",
                                     "--reset", "150", "--out", str(tmp_path / "sweep")])
    assert swept.exit_code == 0, swept.output
    cells = {c["strategy"]: c for c in json.loads((tmp_path / "sweep" / "results.json").read_text())["sweep"]}
    assert cells["none"]["pass_at_1"] == 0.0 and cells["summary"]["pass_at_1"] == 1.0
    assert "toolgym search sweep --tasks" in (tmp_path / "sweep" / "report.html").read_text()
