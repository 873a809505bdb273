"""SQLite for a compiled domain: schema (with foreign keys and CHECKs), seeded realistic rows, row decoding."""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from toolgym.domains.model import Domain
from toolgym.domains.spec import EntitySpec, FieldSpec, Generator

_SQL_TYPES = {"int": "INTEGER", "float": "REAL", "str": "TEXT", "bool": "INTEGER", "date": "TEXT",
              "datetime": "TEXT", "enum": "TEXT", "ref": "INTEGER"}


def _quote(value: str) -> str:
    """Quote a spec-validated enum value for a CHECK constraint (DDL has no parameters)."""
    return "'" + value.replace("'", "''") + "'"


def table_ddl(entity: EntitySpec) -> str:
    cols = ['"id" INTEGER PRIMARY KEY']
    for f in entity.fields:
        col = f'"{f.name}" {_SQL_TYPES[f.type]}'
        if _SQL_TYPES[f.type] == "TEXT":
            col += " COLLATE NOCASE"
        if not f.nullable:
            col += " NOT NULL"
        if f.unique:
            col += " UNIQUE"
        if f.type == "enum" and f.values:
            col += f' CHECK ("{f.name}" IN ({", ".join(map(_quote, f.values))}))'
        if f.type == "ref":
            col += f' REFERENCES "{f.ref}"("id")'
        cols.append(col)
    if entity.status:
        st = entity.status
        cols.append(f'"{st.field}" TEXT NOT NULL CHECK ("{st.field}" IN ({", ".join(map(_quote, st.states))}))')
    return f'CREATE TABLE "{entity.name}" ({", ".join(cols)})'


def connect(uri: str = "file::memory:") -> sqlite3.Connection:
    """A connection in toolgym's settings (autocommit, rows by name, foreign keys enforced) to the database at
    `uri`: by default a private in-memory one; URIs are enabled, so it can ATTACH a shared-cache database by URI."""
    conn = sqlite3.connect(uri, check_same_thread=False, isolation_level=None, uri=True)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def create_schema(conn: sqlite3.Connection, domain: Domain) -> None:
    """Tables in reference order, with an index on every reference and searchable column."""
    for name in domain.entity_order():
        entity = domain.entities[name]
        conn.execute(table_ddl(entity))
        for f in entity.fields:
            if (f.type == "ref" or f.searchable) and not f.unique:
                conn.execute(f'CREATE INDEX "ix_{name}_{f.name}" ON "{name}" ("{f.name}")')


@lru_cache(maxsize=1)
def _faker():
    from faker import Faker

    return Faker("en_US")


class ValueSampler:
    """Draws field values from generators, seeded; used for seeded rows and for task parameter values."""

    def __init__(self, rng: random.Random, clock: datetime):
        self.rng = rng
        self.clock = clock

    def draw(self, gen: Generator | None, typ: str, values: list[str] | tuple[str, ...] | None = None) -> Any:
        rng = self.rng
        if gen is None:
            gen = _default_generator(typ, values)
        kind = gen.kind
        if kind == "faker":
            fake = _faker()
            fake.seed_instance(rng.getrandbits(32))
            value = getattr(fake, gen.provider)()
            return value if isinstance(value, (int, float, str)) else str(value)
        if kind == "int":
            return rng.randint(int(gen.min), int(gen.max))
        if kind == "float":
            return round(rng.uniform(gen.min, gen.max), gen.decimals)
        if kind == "choice":
            return rng.choices(gen.values, weights=gen.weights)[0]
        if kind == "words":
            return " ".join(rng.sample(gen.values, min(gen.n, len(gen.values))))
        if kind == "pattern":
            return "".join(str(rng.randint(0, 9)) if c == "#" else chr(rng.randint(65, 90)) if c == "?" else c
                           for c in gen.pattern)
        if kind in ("date", "datetime"):
            lo, hi = gen.min if gen.min is not None else -365, gen.max if gen.max is not None else 0
            moment = self.clock + timedelta(days=rng.uniform(lo, hi))
            return moment.date().isoformat() if kind == "date" else moment.replace(microsecond=0).isoformat()
        return rng.random() < gen.p


def _default_generator(typ: str, values) -> Generator:
    if values:
        return Generator(kind="choice", values=list(values))
    return {
        "int": Generator(kind="int", min=1, max=100),
        "float": Generator(kind="float", min=1, max=500),
        "bool": Generator(kind="bool"),
        "date": Generator(kind="date"),
        "datetime": Generator(kind="datetime"),
    }.get(typ, Generator(kind="pattern", pattern="????-####"))


def _field_value(sampler: ValueSampler, f: FieldSpec, ids: dict[str, list[int]]) -> Any:
    if f.type == "ref":
        return sampler.rng.choice(ids[f.ref])
    value = sampler.draw(f.gen, f.type, f.values)
    if f.type == "bool":
        return int(bool(value))
    if f.type == "int":
        return int(value)
    return value


def populate(conn: sqlite3.Connection, domain: Domain, seed: int) -> None:
    """Fill every table with `rows` seeded rows; references only point at existing rows, unique fields stay unique."""
    sampler = ValueSampler(random.Random(seed), datetime.fromisoformat(domain.spec.clock))
    ids: dict[str, list[int]] = {}
    conn.execute("BEGIN")
    for name in domain.entity_order():
        entity = domain.entities[name]
        fields = entity.fields
        columns = [f.name for f in fields] + ([entity.status.field] if entity.status else [])
        seen: dict[str, set] = {f.name: set() for f in fields if f.unique}
        rows = []
        for i in range(entity.rows):
            row = []
            for f in fields:
                value = _field_value(sampler, f, ids)
                if f.unique:
                    tries = 0
                    while value in seen[f.name] and tries < 20:
                        value, tries = _field_value(sampler, f, ids), tries + 1
                    if value in seen[f.name]:
                        value = f"{value}-{i}" if isinstance(value, str) else value + 1000003 * (i + 1)
                    seen[f.name].add(value)
                row.append(value)
            if entity.status:
                st = entity.status
                weights = [(st.seed_weights or {}).get(s, 1.0 if st.seed_weights is None else 0.0) for s in st.states]
                row.append(sampler.rng.choices(st.states, weights=weights)[0])
            rows.append((i + 1, *row))
        cols = ", ".join(f'"{c}"' for c in ["id", *columns])
        marks = ", ".join("?" for _ in range(len(columns) + 1))
        conn.executemany(f'INSERT INTO "{name}" ({cols}) VALUES ({marks})', rows)
        ids[name] = [r[0] for r in rows]
    conn.execute("COMMIT")


def decode_row(entity: EntitySpec, row: sqlite3.Row | None) -> dict[str, Any] | None:
    """A row as a JSON-ready dict (booleans back from 0/1)."""
    if row is None:
        return None
    out = dict(row)
    for f in entity.fields:
        if f.type == "bool" and out.get(f.name) is not None:
            out[f.name] = bool(out[f.name])
    return out
