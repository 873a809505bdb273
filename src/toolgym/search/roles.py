"""The roles that vet a generated question (as in the report): two shortcut filters, a scripted solver that must
reach the answer through `search` and `open` alone, and a judge that re-derives uniqueness and the answer."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from toolgym.domains.model import Domain
from toolgym.envs.environment import ToolCall
from toolgym.search.corpus import Corpus, ParsedPage, link_target, parse_page_text
from toolgym.search.questions import Constraint, Question, QuestionGenerator
from toolgym.search.tools import SearchEnvironment
from toolgym.tasks.text import fmt, words

SHORTCUT_K = 5
"""A question is a shortcut when its own words put the answer page in this many top search results."""
SOLVER_K = 20


@dataclass
class Reader:
    """Reads pages through a SearchEnvironment's tools (what a solver may use), parsing what it reads."""

    env: SearchEnvironment

    def call(self, name: str, **arguments) -> dict:
        result = self.env.call(name, arguments)
        return result.content if result.ok else {}

    def search(self, query: str, k: int) -> list[str]:
        return [r["page"] for r in self.call("search", query=query, k=k).get("results", [])]

    def read(self, page: str) -> ParsedPage:
        """Open every part of a page and parse it."""
        first = self.call("open", page=page, part=1)
        texts = [first.get("text", "")]
        texts += [self.call("open", page=page, part=p).get("text", "") for p in range(2, first.get("parts", 1) + 1)]
        return parse_page_text("".join(texts))


def matches(page: ParsedPage, entity: str, constraints: list[Constraint]) -> bool:
    return page.entity == words(entity) and all(c.holds_text(page.facts.get(words(c.field))) for c in constraints)


def search_shortcut(corpus: Corpus, question: Question) -> bool:
    """Whether one search with the question's own words returns the answer page among the top results."""
    return question.answer_page in {r["page"] for r in corpus.search(question.text, SHORTCUT_K)}


def one_hop_answer(corpus: Corpus, question: Question) -> str | None:
    """A one-hop solver: search the question's words, read the first result about the asked entity, answer from it."""
    reader = Reader(SearchEnvironment(corpus, ""))
    for page in reader.search(question.text, SHORTCUT_K):
        parsed = reader.read(page)
        if parsed.entity == words(question.hops[-1].entity):
            return parsed.facts.get(words(question.answer_field))
    return None


def start_query(question: Question) -> str:
    """The solver's first search: the start entity and the words of its attributes."""
    first = question.hops[0]
    return " ".join([words(first.entity), *(str(c.value) for c in first.constraints)])


def solve(corpus: Corpus, question: Question) -> str | None:
    """The scripted solver: find the start entity by search, follow each hop by opening linked pages, keep only the
    pages whose stated facts fit each description, and read the answer. Knows the question's structure, never the
    rows or pages; gives up (None) when a step does not leave exactly one page."""
    reader = Reader(SearchEnvironment(corpus, ""))
    first = question.hops[0]
    found = [p for p in reader.search(start_query(question), SOLVER_K)
             if matches(reader.read(p), first.entity, first.constraints)]
    if len(found) != 1:
        return None
    page = reader.read(found[0])
    for hop in question.hops[1:]:
        role = words(hop.via.removesuffix("_id"))
        if hop.direction == "forward":
            target = link_target(page.facts.get(role, ""))
            if target is None:
                return None
            page = reader.read(target)
            continue
        plural = words(corpus.domain.entities[hop.entity].plural_name).lower()
        children = page.backlinks.get((plural, role), [])
        fits = [parsed for parsed in map(reader.read, children) if matches(parsed, hop.entity, hop.constraints)]
        if len(fits) != 1:
            return None
        page = fits[0]
    return page.facts.get(words(question.answer_field))


def gold_calls(corpus: Corpus, question: Question) -> list[ToolCall]:
    """The synthesis path as tool calls: the solver's first search, then every part of each page on the walk."""
    calls = [ToolCall(name="search", arguments={"query": start_query(question), "k": SOLVER_K})]
    for hop in question.hops:
        calls += [ToolCall(name="open", arguments={"page": hop.page, "part": p})
                  for p in range(1, corpus.page(hop.page)[1] + 1)]
    return calls


def judge(domain: Domain, db: sqlite3.Connection, corpus: Corpus, question: Question) -> list[str]:
    """Problems with a question (empty if sound): every description must fit exactly one row of the database
    (the start also exactly one page of the corpus, distractors included), and the walk must end at the answer."""
    gen = QuestionGenerator(domain, db, corpus)
    problems = []
    first = question.hops[0]
    if gen.count(first.entity, first.constraints) != 1:
        problems.append(f"the start description fits {gen.count(first.entity, first.constraints)} rows")
    fitting = [p for p, _, facts in corpus.pages_of(first.entity)
               if all(c.holds(facts.get(c.field)) for c in first.constraints)]
    if fitting != [first.page]:
        problems.append(f"the start description fits pages {fitting}, not only {first.page}")
    row = gen.row(first.entity, first.row_id)
    for hop in question.hops[1:]:
        if hop.direction == "forward":
            row = gen.row(hop.entity, row[hop.via])
            continue
        where = (hop.via, row["id"])
        ids = [i for (i,) in db.execute(f'SELECT "id" FROM "{hop.entity}" WHERE "{hop.via}" = ?', (row["id"],))
               if all(c.holds(gen.row(hop.entity, i)[c.field]) for c in hop.constraints)]
        if len(ids) != 1 or gen.count(hop.entity, hop.constraints, where) != 1:
            problems.append(f"the {words(hop.entity)} hop fits {len(ids)} rows")
            return problems
        row = gen.row(hop.entity, ids[0])
    if row["id"] != question.hops[-1].row_id:
        problems.append("the walk does not end at the answer's row")
    elif fmt(row[question.answer_field]) != question.answer:
        problems.append(f"the answer should be {fmt(row[question.answer_field])!r}, not {question.answer!r}")
    return problems
