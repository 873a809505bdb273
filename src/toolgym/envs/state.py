"""Database state: snapshots, a stable hash, and a semantic diff (which rows changed, how) that reads as text."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

FLOAT_TOL = 1e-6


@dataclass(frozen=True)
class Snapshot:
    """Every row of every table as tuples (cheap to take and to compare), with each table's column names."""

    columns: dict[str, tuple[str, ...]]
    rows: dict[str, dict[int, tuple]]

    def only(self, tables: list[str]) -> Snapshot:
        """The same state restricted to `tables`."""
        return Snapshot({t: self.columns[t] for t in tables}, {t: self.rows[t] for t in tables})


def snapshot(conn: sqlite3.Connection, tables: list[str]) -> Snapshot:
    columns, rows = {}, {}
    for t in tables:
        cur = conn.cursor()
        cur.row_factory = None
        cur.execute(f'SELECT * FROM "{t}" ORDER BY "id"')
        columns[t] = tuple(d[0] for d in cur.description)
        rows[t] = {r[0]: r for r in cur}
    return Snapshot(columns, rows)


def state_hash(snap: Snapshot) -> str:
    digest = hashlib.sha256()
    for t in sorted(snap.rows):
        digest.update(repr((t, snap.columns[t], sorted(snap.rows[t].items()))).encode())
    return digest.hexdigest()[:16]


class RowChange(BaseModel):
    """One row's change: added (values), removed (values), or changed (field -> [old, new])."""

    table: str
    kind: Literal["added", "removed", "changed"]
    id: int
    values: dict[str, Any] = {}
    fields: dict[str, tuple[Any, Any]] = {}

    def describe(self) -> str:
        if self.kind == "changed":
            parts = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(self.fields.items()))
            return f"{self.table} {self.id}: {parts}"
        values = ", ".join(f"{k}={v!r}" for k, v in sorted(self.values.items()) if k != "id")
        return f"{self.kind} {self.table} row ({values})"


def diff(before: Snapshot, after: Snapshot) -> list[RowChange]:
    """Semantic diff of two snapshots of the same schema (rows compared as tuples, fields only where they differ)."""
    changes: list[RowChange] = []
    for table in sorted(set(before.rows) | set(after.rows)):
        cols = after.columns.get(table) or before.columns[table]
        old, new = before.rows.get(table, {}), after.rows.get(table, {})
        for rid in sorted(set(old) | set(new)):
            a, b = old.get(rid), new.get(rid)
            if a == b:
                continue
            if a is None:
                changes.append(RowChange(table=table, kind="added", id=rid, values=dict(zip(cols, b))))
            elif b is None:
                changes.append(RowChange(table=table, kind="removed", id=rid, values=dict(zip(cols, a))))
            else:
                fields = {c: (x, y) for c, x, y in zip(cols, a, b) if not _same(x, y)}
                if fields:
                    changes.append(RowChange(table=table, kind="changed", id=rid, fields=fields))
    return changes


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= FLOAT_TOL * max(1.0, abs(a), abs(b))
    return a == b


def _added_key(change: RowChange) -> str:
    values = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in change.values.items() if k != "id"}
    return json.dumps(values, sort_keys=True, default=str)


class StateComparison(BaseModel):
    """Expected vs actual changes from the same initial state. `ok` when they agree; `problems` says why not."""

    ok: bool
    problems: list[str]


def compare_changes(expected: list[RowChange], actual: list[RowChange]) -> StateComparison:
    """Compare two change sets: existing rows by id and field, new rows as a multiset of values (ids may differ)."""
    problems: list[str] = []
    exp_rows = {(c.table, c.id): c for c in expected if c.kind != "added"}
    act_rows = {(c.table, c.id): c for c in actual if c.kind != "added"}
    for key, exp in exp_rows.items():
        act = act_rows.get(key)
        if exp.kind == "removed":
            if act is None or act.kind != "removed":
                problems.append(f"missing change: {exp.table} {exp.id} should have been removed")
            continue
        got = act.fields if act is not None and act.kind == "changed" else {}
        for f, (old, new) in sorted(exp.fields.items()):
            if f not in got:
                problems.append(f"missing change: {exp.table} {exp.id} {f} should be {new!r} (still {old!r})")
            elif not _same(got[f][1], new):
                problems.append(f"wrong value: {exp.table} {exp.id} {f} should be {new!r}, found {got[f][1]!r}")
    for key, act in act_rows.items():
        exp = exp_rows.get(key)
        extra = act.fields if exp is None else {f: v for f, v in act.fields.items() if f not in exp.fields}
        if act.kind == "removed" and exp is None:
            problems.append(f"unexpected change: {act.table} {act.id} was removed")
        for f, (old, new) in sorted(extra.items()):
            problems.append(f"unexpected change: {act.table} {act.id} {f} {old!r} -> {new!r}")
    exp_added = Counter(_added_key(c) for c in expected if c.kind == "added")
    act_added = Counter(_added_key(c) for c in actual if c.kind == "added")
    by_key = {_added_key(c): c for c in [*expected, *actual] if c.kind == "added"}
    for key in sorted((exp_added - act_added).elements()):
        problems.append(f"missing new row: {by_key[key].describe().removeprefix('added ')}")
    for key in sorted((act_added - exp_added).elements()):
        problems.append(f"unexpected new row: {by_key[key].describe().removeprefix('added ')}")
    return StateComparison(ok=not problems, problems=problems)
