"""Property-based: random and hostile arguments at every tool of every domain never raise and never break the
database (foreign keys, CHECKed states, unique fields)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolgym.domains import load_domain
from toolgym.envs.environment import Environment

from conftest import DOMAINS

HOSTILE = st.sampled_from(["' OR 1=1 --", "'; DROP TABLE x; --", "\x00", "%", "_", "NULL", "1; DELETE FROM t",
                           "\"", "🙂", "a" * 100_000, "placed", "active", "2025-06-01", ""])
VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.integers(0, 1200),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), HOSTILE,
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)

ENVS: dict[str, Environment] = {}


def _env(name: str) -> Environment:
    if name not in ENVS:
        d = load_domain(name)
        ENVS[name] = Environment(d, list(d.tools))
    return ENVS[name]


def _consistent(env: Environment) -> None:
    """CHECKed states, NOT NULL, unique indexes and references, read the way tools read (through the overlay a
    writing environment keeps over the shared rows, so references are checked by query rather than by PRAGMA)."""
    # `main` only: an overlay's attached `base` is the shared database no write can reach (tests/test_overlay.py),
    # and SQLite 3.40's all-schema quick_check misreads CHECKs of a table whose name is in two schemas
    assert env.reader.execute("PRAGMA main.quick_check").fetchone()[0] == "ok"
    for entity in env.domain.entities.values():
        for f in entity.fields:
            if f.type == "ref":
                dangling = env.reader.execute(
                    f'SELECT COUNT(*) FROM "{entity.name}" AS c WHERE c."{f.name}" IS NOT NULL AND NOT EXISTS '
                    f'(SELECT 1 FROM "{f.ref}" AS p WHERE p."id" = c."{f.name}")').fetchone()[0]
                assert dangling == 0, f"{entity.name}.{f.name} points at missing {f.ref} rows"


@pytest.mark.parametrize("name", DOMAINS)
def test_hostile_arguments_never_raise_or_corrupt(name):
    env = _env(name)
    tools = sorted(env.tool_names)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(tool=st.sampled_from(tools), data=st.data())
    def run(tool, data):
        params = [p.name for p in env.tools[tool].params]
        keys = st.sampled_from(params + ["extra", "id", "'; --"]) if params else st.sampled_from(["extra"])
        args = data.draw(st.one_of(st.dictionaries(keys, VALUE, max_size=5), VALUE))
        result = env.call(tool, args)
        assert result.ok or result.error
        json.dumps(result.content, default=str)
        _consistent(env)

    run()


@pytest.mark.parametrize("name", DOMAINS)
def test_well_typed_arguments_on_real_rows_keep_database_consistent(name):
    env = _env(name)
    d = load_domain(name)
    counts = {e: env.reader.execute(f'SELECT COUNT(*) FROM "{e}"').fetchone()[0] for e in d.entities}

    def typed(p):
        if p.semantic and p.semantic.endswith(".id"):
            return st.integers(1, counts[p.semantic.split(".")[0]] + 2)
        if p.values:
            return st.sampled_from(list(p.values))
        return {"int": st.integers(-5, 500), "float": st.floats(-10, 5000), "bool": st.booleans(),
                "date": st.dates().map(str), "datetime": st.datetimes().map(lambda x: x.isoformat())}.get(
            p.type, st.text(max_size=20))

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(tool=st.sampled_from(sorted(d.tools)), data=st.data())
    def run(tool, data):
        args = {p.name: data.draw(typed(p)) for p in d.tools[tool].params if p.required or data.draw(st.booleans())}
        result = env.call(tool, args)
        assert result.ok or result.error
        _consistent(env)

    run()
