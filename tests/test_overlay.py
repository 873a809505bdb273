"""Copy-on-write environments (envs.overlay): an environment that writes through a private overlay of the shared
seeded database behaves exactly like one holding a whole private copy, and no write reaches the shared rows."""

from __future__ import annotations

import random
import sqlite3

import pytest

from toolgym.domains import load_domain
from toolgym.envs.environment import Environment, base_database, base_state

from conftest import DOMAINS


def _args(env: Environment, tool: str, rng: random.Random) -> dict:
    """Well-typed arguments on real rows (ids drawn from existing rows, enums from their values)."""
    args = {}
    for p in env.tools[tool].params:
        if not p.required and rng.random() < 0.6:
            continue
        if p.semantic and p.semantic.endswith(".id"):
            entity = p.semantic.split(".")[0]
            count = env.reader.execute(f'SELECT COUNT(*) FROM "{entity}"').fetchone()[0]
            args[p.name] = rng.randint(1, count + 1)
        elif p.values:
            args[p.name] = rng.choice(p.values)
        elif p.semantic:
            entity, _, field = p.semantic.partition(".")
            row = env.reader.execute(f'SELECT "{field}" FROM "{entity}" ORDER BY random() LIMIT 1').fetchone()
            args[p.name] = row[0] if row else "x"
        else:
            args[p.name] = {"int": rng.randint(1, 50), "float": round(rng.uniform(1, 500), 2),
                            "bool": rng.random() < 0.5, "date": "2025-06-01"}.get(p.type, f"v{rng.randint(0, 99)}")
    return args


@pytest.mark.parametrize("name", DOMAINS)
def test_an_overlay_environment_behaves_like_a_whole_private_copy(name):
    domain = load_domain(name)
    overlay, whole = Environment(domain, list(domain.tools)), Environment(domain, list(domain.tools))
    whole.conn  # noqa: B018 - asking for conn switches `whole` to one private copy of everything
    rng = random.Random(name)
    writes = [t for t in sorted(domain.tools) if domain.tools[t].writes]
    reads = [t for t in sorted(domain.tools) if not domain.tools[t].writes]
    ok_writes = 0
    for step in range(120):
        tool = rng.choice(writes if step % 2 else reads)
        args = _args(whole, tool, random.Random(step))
        a, b = overlay.call(tool, args), whole.call(tool, args)
        assert (a.ok, a.content, a.error) == (b.ok, b.content, b.error), (tool, args)
        ok_writes += a.ok and domain.tools[tool].writes
        if step % 30 == 29:
            fork = overlay.fork()
            assert fork.state_hash() == overlay.state_hash() == whole.state_hash()
            assert fork.diff_from(overlay.snapshot()) == []
    assert ok_writes >= 5
    assert overlay.state_hash() == whole.state_hash()
    merged = overlay.fork().conn
    assert merged.execute("PRAGMA foreign_key_check").fetchall() == []
    assert base_state(domain, 0)[1] == Environment(domain, list(domain.tools)).state_hash()


def test_no_write_reaches_the_shared_rows():
    domain = load_domain("bank")
    env = Environment(domain, list(domain.tools))
    before = base_state(domain, 0)[1]
    customer = env.reader.execute('SELECT * FROM "customer" LIMIT 1').fetchone()
    assert env.call("update_customer_phone", {"customer_id": customer["id"], "phone": "+1 555 0100"}).ok
    writer = env._overlay.writer([])
    for sql in ('UPDATE base."account" SET "balance" = 0', 'DELETE FROM "account"', 'DROP TABLE base."card"'):
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            writer.execute(sql)
    fresh = Environment(domain, list(domain.tools))
    assert fresh.state_hash() == before
    assert base_database(domain, 0).execute('SELECT "phone" FROM "customer" WHERE "id" = ?',
                                            (customer["id"],)).fetchone()[0] == customer["phone"]


def test_a_writer_holds_only_the_tables_it_wrote():
    domain = load_domain("food_delivery")
    env = Environment(domain, list(domain.tools))
    order = env.reader.execute('SELECT * FROM "order" WHERE "status" = ? LIMIT 1', ("placed",)).fetchone()
    assert env.call("cancel_order", {"order_id": order["id"]}).ok
    private = {r[0] for r in env.reader.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")}
    assert private == {"order"}
    own = env.reader.execute("PRAGMA main.page_count").fetchone()[0]
    assert own < base_database(domain, 0).execute("PRAGMA page_count").fetchone()[0] / 2


def test_references_are_enforced_across_the_overlay_and_the_shared_rows():
    domain = load_domain("bank")
    env = Environment(domain, list(domain.tools))
    writer = env._overlay.writer(["account"])
    account = dict(writer.execute('SELECT * FROM "account" LIMIT 1').fetchone())
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        writer.execute('UPDATE "account" SET "customer_id" = 999999 WHERE "id" = ?', (account["id"],))
    row = {**account, "id": None, "account_number": "ZZ-000001", "customer_id": 999999}
    marks = ", ".join("?" for _ in row)
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        writer.execute(f'INSERT INTO "account" ({", ".join(row)}) VALUES ({marks})', tuple(row.values()))
    writer.execute(f'INSERT INTO "account" ({", ".join(row)}) VALUES ({marks})',
                   tuple({**row, "customer_id": account["customer_id"]}.values()))
    forked = env.fork()._overlay.writer([])
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        forked.execute('UPDATE "account" SET "customer_id" = 999999 WHERE "id" = ?', (account["id"],))
