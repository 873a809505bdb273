"""Run a tool against a SQLite connection with parameterized SQL only.

Identifiers (table and column names) come from a validated spec, never from arguments; every argument
value is bound as a parameter. Failures raise ToolError with a message written for the agent; every
write runs inside a savepoint, so a failed tool changes nothing.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError

from toolgym.domains.database import decode_row
from toolgym.domains.model import PAGE_LIMIT, Domain, Tool
from toolgym.domains.spec import Condition
from toolgym.validation import problems


class ToolError(Exception):
    """A failure the agent should read and recover from (bad arguments, missing row, failed precondition)."""


def _fetch(conn: sqlite3.Connection, domain: Domain, entity: str, column: str, value: Any) -> dict[str, Any] | None:
    cur = conn.execute(f'SELECT * FROM "{entity}" WHERE "{column}" = ? LIMIT 1', (value,))
    return decode_row(domain.entities[entity], cur.fetchone())


def _require_row(conn, domain: Domain, entity: str, row_id: Any) -> dict[str, Any]:
    row = _fetch(conn, domain, entity, "id", row_id)
    if row is None:
        raise ToolError(f"{entity} {row_id} not found")
    return row


def _check_refs(conn, domain: Domain, entity: str, values: dict[str, Any]) -> None:
    for f in domain.entities[entity].fields:
        if f.type == "ref" and values.get(f.name) is not None:
            _require_row(conn, domain, f.ref, values[f.name])


def _check_unique(conn, domain: Domain, entity: str, values: dict[str, Any], row_id: int | None = None) -> None:
    for f in domain.entities[entity].fields:
        if f.unique and values.get(f.name) is not None:
            other = _fetch(conn, domain, entity, f.name, values[f.name])
            if other is not None and other["id"] != row_id:
                raise ToolError(f"another {entity} already has {f.name} '{values[f.name]}'")


def _encode(domain: Domain, entity: str, values: dict[str, Any]) -> dict[str, Any]:
    bools = {f.name for f in domain.entities[entity].fields if f.type == "bool"}
    return {k: int(v) if k in bools and v is not None else v for k, v in values.items()}


def _insert(conn, domain: Domain, entity: str, values: dict[str, Any]) -> dict[str, Any]:
    spec = domain.entities[entity]
    values = dict(values)
    if spec.status and values.get(spec.status.field) is None:
        values[spec.status.field] = spec.status.initial
    _check_refs(conn, domain, entity, values)
    _check_unique(conn, domain, entity, values)
    values = _encode(domain, entity, values)
    cols = ", ".join(f'"{k}"' for k in values)
    marks = ", ".join("?" for _ in values)
    cur = conn.execute(f'INSERT INTO "{entity}" ({cols}) VALUES ({marks})', tuple(values.values()))
    return _require_row(conn, domain, entity, cur.lastrowid)


def _update(conn, domain: Domain, entity: str, row_id: Any, values: dict[str, Any]) -> dict[str, Any]:
    _require_row(conn, domain, entity, row_id)
    _check_refs(conn, domain, entity, values)
    _check_unique(conn, domain, entity, values, row_id)
    values = _encode(domain, entity, values)
    sets = ", ".join(f'"{k}" = ?' for k in values)
    conn.execute(f'UPDATE "{entity}" SET {sets} WHERE "id" = ?', (*values.values(), row_id))
    return _require_row(conn, domain, entity, row_id)


def _page(conn, domain: Domain, entity: str, where: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    clauses = [f'"{k}" = ?' for k in where]
    sql_where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    params = tuple(_encode(domain, entity, where).values())
    total = conn.execute(f'SELECT COUNT(*) FROM "{entity}"{sql_where}', params).fetchone()[0]
    limit, offset = args.get("limit") or PAGE_LIMIT, args.get("offset") or 0
    cur = conn.execute(f'SELECT * FROM "{entity}"{sql_where} ORDER BY "id" LIMIT ? OFFSET ?', (*params, limit, offset))
    items = [decode_row(domain.entities[entity], r) for r in cur.fetchall()]
    return {"total": total, "offset": offset, "items": items}


class _Scope:
    """Values visible to an action's expressions: parameters, loaded/inserted rows, and the clock."""

    def __init__(self, params: dict[str, Any], now: str):
        self.params, self.rows, self.now = params, {}, now

    def eval(self, expr: Any) -> Any:
        if isinstance(expr, dict):
            op, args = next(iter(expr.items()))
            vals = [self.eval(a) for a in args]
            return _apply(op, vals)
        if isinstance(expr, list):
            return [self.eval(a) for a in expr]
        if isinstance(expr, str) and expr.startswith("$"):
            parts = expr[1:].split(".")
            if parts == ["now"]:
                return self.now
            if len(parts) == 1:
                return self.params.get(parts[0])
            row = self.rows.get(parts[0])
            return None if row is None else row.get(parts[1])
        return expr


def _apply(op: str, vals: list[Any]) -> Any:
    if op == "concat":
        return "".join("" if v is None else str(v) for v in vals)
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in vals):
        raise ToolError(f"cannot compute {op} of {vals}")
    if op == "round":
        return round(vals[0], int(vals[1]) if len(vals) > 1 else 2)
    if op == "add":
        out = sum(vals)
    elif op == "sub":
        out = vals[0] - sum(vals[1:])
    elif op == "mul":
        out = 1
        for v in vals:
            out *= v
    elif op == "div":
        if any(v == 0 for v in vals[1:]):
            raise ToolError("division by zero")
        out = vals[0]
        for v in vals[1:]:
            out /= v
    else:
        out = min(vals) if op == "min" else max(vals)
    return round(out, 6) if isinstance(out, float) else out


def _compare(c: Condition, left: Any, right: Any) -> bool:
    op = c.op
    if op in ("in", "not_in"):
        members = right if isinstance(right, list) else [right]
        return (left in members) == (op == "in")
    if op == "eq":
        return left == right
    if op == "ne":
        return left != right
    if left is None or right is None:
        return False
    try:
        return {"lt": left < right, "lte": left <= right, "gt": left > right, "gte": left >= right}[op]
    except TypeError:
        return False


def _run_action(conn, domain: Domain, tool: Tool, args: dict[str, Any], now: str) -> dict[str, Any]:
    spec = tool.action
    scope = _Scope(args, now)
    for p in tool.params:
        if p.semantic and args.get(p.name) is not None:
            ent, _, fld = p.semantic.partition(".")
            if fld == "id" or any(f.name == fld and f.unique for f in domain.entities[ent].fields):
                if _fetch(conn, domain, ent, fld, args[p.name]) is None:
                    raise ToolError(f"no {ent} with {fld} {args[p.name]!r}")
    for ld in spec.load:
        column, value = (ld.by, scope.eval(ld.value)) if ld.by else ("id", scope.eval(ld.id))
        row = _fetch(conn, domain, ld.entity, column, value)
        if row is None:
            raise ToolError(f"{ld.entity} with {column} {value!r} not found")
        scope.rows[ld.as_] = row
    for cond in spec.require:
        if not _compare(cond, scope.eval(cond.left), scope.eval(cond.right)):
            raise ToolError(cond.message)
    alias_entity = {ld.as_: ld.entity for ld in spec.load}
    for eff in spec.effects:
        if eff.insert:
            row = _insert(conn, domain, eff.insert, {k: scope.eval(v) for k, v in eff.values.items()})
            if eff.as_:
                scope.rows[eff.as_], alias_entity[eff.as_] = row, eff.insert
        else:
            row_id = scope.eval(eff.id)
            row = _update(conn, domain, eff.update, row_id, {k: scope.eval(v) for k, v in eff.set.items()})
            for alias, bound in list(scope.rows.items()):
                if alias_entity[alias] == eff.update and bound.get("id") == row_id:
                    scope.rows[alias] = row
    return {k: scope.eval(v) for k, v in spec.returns.items()} or {"ok": True}


def _dispatch(conn, domain: Domain, tool: Tool, args: dict[str, Any], now: str) -> Any:
    e = tool.entity
    if tool.kind == "get":
        return _require_row(conn, domain, e, args[f"{e}_id"])
    if tool.kind == "find":
        row = _fetch(conn, domain, e, tool.field, args[tool.field])
        if row is None:
            raise ToolError(f"no {e} with {tool.field} {args[tool.field]!r}")
        return row
    if tool.kind == "list":
        target = next(f.ref for f in domain.entities[e].fields if f.name == tool.field)
        _require_row(conn, domain, target, args[tool.field])
        return _page(conn, domain, e, {tool.field: args[tool.field]}, args)
    if tool.kind == "search":
        where = {k: v for k, v in args.items() if k not in ("limit", "offset") and v is not None}
        return _page(conn, domain, e, where, args)
    if tool.kind == "create":
        return _insert(conn, domain, e, {k: v for k, v in args.items() if v is not None})
    if tool.kind == "update":
        return _update(conn, domain, e, args[f"{e}_id"], {tool.field: args[tool.field]})
    if tool.kind == "transition":
        row = _require_row(conn, domain, e, args[f"{e}_id"])
        st, t = domain.entities[e].status, tool.transition
        if row[st.field] not in t.from_:
            raise ToolError(f"cannot {t.name} {e} {row['id']}: its {st.field} is '{row[st.field]}' "
                            f"(allowed from: {', '.join(t.from_)})")
        return _update(conn, domain, e, row["id"], {st.field: t.to})
    return _run_action(conn, domain, tool, args, now)


def _value_problems(tool: Tool, raw: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """What the schema's coercion lets through but the tool must refuse: a boolean given for a number (True is not
    id 1) and a date or date-time that matches the pattern but is not on the calendar."""
    found = []
    for p in tool.params:
        given, value = raw.get(p.name), values.get(p.name)
        if p.type in ("int", "float") and isinstance(given, bool):
            found.append(f"{p.name}: a boolean is not a number")
        elif p.type in ("date", "datetime") and isinstance(value, str):
            try:
                (date if p.type == "date" else datetime).fromisoformat(value)
            except ValueError:
                kind = "date (YYYY-MM-DD)" if p.type == "date" else "date-time (ISO 8601)"
                found.append(f"{p.name}: {value!r} is not a real {kind}")
    return found


def validate_args(tool: Tool, args: Any) -> dict[str, Any]:
    """Coerce and check arguments against the tool's schema, or raise ToolError naming each bad field."""
    if not isinstance(args, dict):
        raise ToolError(f"arguments of {tool.name} must be a JSON object, got {type(args).__name__}")
    try:
        values = tool.args_model.model_validate(args).model_dump()
    except ValidationError as exc:
        raise ToolError(f"invalid arguments for {tool.name}: {'; '.join(problems(exc, 'arguments'))}") from None
    found = _value_problems(tool, args, values)
    if found:
        raise ToolError(f"invalid arguments for {tool.name}: {'; '.join(found)}")
    return values


def execute(conn: sqlite3.Connection, domain: Domain, tool: Tool, args: Any, now: str) -> Any:
    """Validate and run (writes inside a savepoint); returns the JSON-ready result or raises ToolError."""
    values = validate_args(tool, args)
    if not tool.writes:
        return _dispatch(conn, domain, tool, values, now)
    conn.execute("SAVEPOINT tool")
    try:
        result = _dispatch(conn, domain, tool, values, now)
    except BaseException as exc:
        conn.execute("ROLLBACK TO tool")
        conn.execute("RELEASE tool")
        if isinstance(exc, sqlite3.IntegrityError):
            raise ToolError(f"{tool.name} violates a database constraint: {exc}") from None
        raise
    conn.execute("RELEASE tool")
    return result
