"""Multi-hop questions from walks over a database's entity graph (the generator role): 2-4 hops along foreign keys,
each entity described by blurred attributes (a year, a range, a category) instead of its name, each description
checked by a database query to match exactly one row."""

from __future__ import annotations

import math
import random
import sqlite3
from typing import Any, Literal

from pydantic import BaseModel

from toolgym.domains.database import decode_row
from toolgym.domains.model import Domain
from toolgym.search.corpus import Corpus, entity_fields, references
from toolgym.tasks.text import fmt, words

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
LOW_CARDINALITY = ("choice", "words")
"""Generators of free-text fields whose values repeat across rows (so they describe without naming)."""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


class Constraint(BaseModel):
    """One blurred attribute of an entity: a value (`eq`), a year or month of a date, or a numeric range."""

    field: str
    op: Literal["eq", "year", "month", "range"]
    value: Any
    upper: float | None = None

    def sql(self) -> tuple[str, list[Any]]:
        """A parameterized WHERE clause selecting the rows with this attribute."""
        column = f'"{self.field}"'
        if self.op == "eq":
            return f"{column} = ?", [int(self.value) if isinstance(self.value, bool) else self.value]
        if self.op in ("year", "month"):
            return f"substr({column}, 1, {len(self.value)}) = ?", [self.value]
        return f"{column} >= ? AND {column} < ?", [self.value, self.upper]

    def holds(self, raw: Any) -> bool:
        """Whether a stored value has this attribute."""
        if raw is None:
            return False
        if self.op == "eq":
            return fmt(raw) == fmt(self.value)
        if self.op in ("year", "month"):
            return str(raw).startswith(self.value)
        return self.value <= float(raw) < self.upper

    def holds_text(self, text: str | None) -> bool:
        """Whether a value as a page states it has this attribute."""
        if text is None:
            return False
        if self.op == "range":
            try:
                return self.value <= float(text) < self.upper
            except ValueError:
                return False
        return self.holds(text)

    def phrase(self) -> str:
        name = words(self.field)
        if self.op == "eq":
            return f"{name} is {fmt(self.value)}"
        if self.op == "year":
            return f"{name} falls in {self.value}"
        if self.op == "month":
            return f"{name} falls in {MONTHS[int(self.value[5:7]) - 1]} {self.value[:4]}"
        return f"{name} is at least {_num(self.value)} and below {_num(self.upper)}"


class Hop(BaseModel):
    """One entity on the walk: reached at the start, forward along its predecessor's reference `via`, or in reverse
    as the one row whose reference `via` points at the predecessor and that has `constraints`."""

    entity: str
    direction: Literal["start", "forward", "reverse"]
    via: str | None = None
    constraints: list[Constraint] = []
    row_id: int
    page: str


class Question(BaseModel):
    """A multi-hop question, its walk through the graph, and its answer (a field of the last entity)."""

    id: str
    domain: str
    hops: list[Hop]
    answer_field: str
    answer: str
    text: str

    @property
    def n_hops(self) -> int:
        return len(self.hops) - 1

    @property
    def answer_page(self) -> str:
        return self.hops[-1].page


def question_text(hops: list[Hop], answer_field: str, domain: Domain) -> str:
    """The question in words: every entity by its attributes and its relation to the previous one, never its name."""
    first = hops[0]
    sentences = [f"Find the {words(first.entity)} whose " + " and whose ".join(c.phrase() for c in first.constraints)
                 + "."]
    for prev, hop in zip(hops, hops[1:]):
        noun, prev_noun = words(hop.entity), words(prev.entity)
        role = words(hop.via.removesuffix("_id"))
        if hop.direction == "forward":
            sentences.append(f"Go to the {noun} that is the {role} of that {prev_noun}.")
        else:
            plural = words(domain.entities[hop.entity].plural_name)
            sentences.append(f"Among the {plural} whose {role} is that {prev_noun}, take the one whose "
                             + " and whose ".join(c.phrase() for c in hop.constraints) + ".")
    sentences.append(f"What is the {words(answer_field)} of that {words(hops[-1].entity)}?")
    return " ".join(sentences)


class QuestionGenerator:
    """Walks a database's entity graph and describes each entity on the walk so that exactly one row fits."""

    def __init__(self, domain: Domain, db: sqlite3.Connection, corpus: Corpus, max_start: int = 4, max_reverse: int = 3):
        self.domain, self.db, self.corpus = domain, db, corpus
        self.max_start, self.max_reverse = max_start, max_reverse
        self.refs = references(domain)

    def row(self, entity: str, row_id: int) -> dict[str, Any]:
        spec = self.domain.entities[entity]
        return decode_row(spec, self.db.execute(f'SELECT * FROM "{entity}" WHERE "id" = ?', (row_id,)).fetchone())

    def count(self, entity: str, constraints: list[Constraint], where: tuple[str, int] | None = None) -> int:
        """Rows of `entity` with every attribute (and, for a reverse hop, referencing the given row)."""
        clauses, params = [], []
        for c in constraints:
            clause, values = c.sql()
            clauses.append(clause)
            params += values
        if where is not None:
            clauses.append(f'"{where[0]}" = ?')
            params.append(where[1])
        sql = f'SELECT COUNT(*) FROM "{entity}"' + (" WHERE " + " AND ".join(clauses) if clauses else "")
        return self.db.execute(sql, params).fetchone()[0]

    def options(self, entity: str, row: dict[str, Any]) -> list[Constraint]:
        """Every blurred attribute of `row` a description may use (no names, no unique keys)."""
        spec = self.domain.entities[entity]
        specs = {f.name: f for f in spec.fields}
        out = []
        for name, typ in entity_fields(spec):
            value, field = row.get(name), specs.get(name)
            if value is None or name == spec.label or (field is not None and field.unique):
                continue
            if typ in ("enum", "bool"):
                out.append(Constraint(field=name, op="eq", value=value))
            elif typ in ("date", "datetime"):
                out += [Constraint(field=name, op="year", value=value[:4]),
                        Constraint(field=name, op="month", value=value[:7])]
            elif typ in ("int", "float"):
                width = max(10.0, 10.0 ** math.floor(math.log10(abs(value)))) if abs(value) >= 1 else 1.0
                low = math.floor(value / width) * width
                out.append(Constraint(field=name, op="range", value=low, upper=low + width))
            elif typ == "str" and field is not None and field.gen is not None and field.gen.kind in LOW_CARDINALITY:
                out.append(Constraint(field=name, op="eq", value=value))
        return out

    def describe(self, entity: str, row: dict[str, Any], rng: random.Random, limit: int,
                 where: tuple[str, int] | None = None) -> list[Constraint] | None:
        """Attributes (at most `limit`, at most one per field) that only `row` has, or None if none suffice."""
        options = self.options(entity, row)
        rng.shuffle(options)
        chosen: list[Constraint] = []
        count = self.count(entity, chosen, where)
        while count > 1 or not chosen:
            used = {c.field for c in chosen}
            scored = [(self.count(entity, [*chosen, o], where), o) for o in options if o.field not in used]
            better = [(n, o) for n, o in scored if n < count or not chosen]
            if not better or len(chosen) == limit:
                return None
            count, pick = rng.choice(sorted(better, key=lambda x: x[0])[:2])
            chosen.append(pick)
        return chosen

    def edges(self, entity: str, row: dict[str, Any]) -> list[tuple[str, str, str]]:
        """Hops out of `row`: ("forward", field, referenced entity) and ("reverse", referencing field, entity)."""
        forward = [("forward", f, ref) for e, f, ref in self.refs if e == entity and row.get(f) is not None]
        reverse = [("reverse", f, e) for e, f, ref in self.refs if ref == entity]
        return forward + reverse

    def step(self, prev: Hop, rng: random.Random, visited: set[tuple[str, int]]) -> Hop | None:
        """A hop out of `prev` to a row not yet visited, or None when every edge is exhausted."""
        row = self.row(prev.entity, prev.row_id)
        edges = self.edges(prev.entity, row)
        rng.shuffle(edges)
        for direction, field, entity in edges:
            if direction == "forward":
                target = row[field]
                if (entity, target) not in visited:
                    return Hop(entity=entity, direction="forward", via=field, row_id=target,
                               page=self.corpus.page_of(entity, target))
                continue
            children = [i for (i,) in self.db.execute(f'SELECT "id" FROM "{entity}" WHERE "{field}" = ? ORDER BY "id"',
                                                        (prev.row_id,)) if (entity, i) not in visited]
            if not children:
                continue
            child = rng.choice(children)
            constraints = self.describe(entity, self.row(entity, child), rng, self.max_reverse, (field, prev.row_id))
            if constraints is not None:
                return Hop(entity=entity, direction="reverse", via=field, constraints=constraints, row_id=child,
                           page=self.corpus.page_of(entity, child))
        return None

    def generate(self, rng: random.Random, n_hops: int, question_id: str) -> Question | None:
        """A question of `n_hops` hops from a random start row, or None if this walk cannot be described."""
        entity = rng.choice([e.name for e in self.domain.spec.entities])
        n_rows = self.db.execute(f'SELECT COUNT(*) FROM "{entity}"').fetchone()[0]
        if n_rows == 0:
            return None
        start = self.row(entity, rng.randrange(1, n_rows + 1))
        if start is None:
            return None
        constraints = self.describe(entity, start, rng, self.max_start)
        if constraints is None:
            return None
        hops = [Hop(entity=entity, direction="start", constraints=constraints, row_id=start["id"],
                    page=self.corpus.page_of(entity, start["id"]))]
        visited = {(entity, start["id"])}
        for _ in range(n_hops):
            hop = self.step(hops[-1], rng, visited)
            if hop is None:
                return None
            hops.append(hop)
            visited.add((hop.entity, hop.row_id))
        last = self.row(hops[-1].entity, hops[-1].row_id)
        spec = self.domain.entities[hops[-1].entity]
        described = {c.field for c in hops[-1].constraints}
        answerable = [f for f, typ in entity_fields(spec) if typ in ("str", "int", "float", "date", "datetime")
                      and f != spec.label and f not in described and last.get(f) not in (None, "")]
        if not answerable:
            return None
        field = rng.choice(answerable)
        return Question(id=question_id, domain=self.domain.name, hops=hops, answer_field=field,
                        answer=fmt(last[field]), text=question_text(hops, field, self.domain))
