"""Tool execution against SQLite: semantics of derived tools, atomic failure, values never become SQL."""

from __future__ import annotations

from toolgym.domains import load_domain
from toolgym.envs.environment import Environment


def _env() -> Environment:
    d = load_domain("food_delivery")
    return Environment(d, list(d.tools))


def _row(env: Environment, table: str, status: str) -> dict:
    return dict(env.reader.execute(f'SELECT * FROM "{table}" WHERE status = ? LIMIT 1', (status,)).fetchone())


def test_transition_only_from_allowed_states():
    env = _env()
    placed, delivered = _row(env, "order", "placed"), _row(env, "order", "delivered")
    ok = env.call("cancel_order", {"order_id": placed["id"]})
    assert ok.ok and ok.content["status"] == "cancelled"
    refused = env.call("cancel_order", {"order_id": delivered["id"]})
    assert not refused.ok and "delivered" in refused.error
    assert env.call("get_order", {"order_id": delivered["id"]}).content["status"] == "delivered"


def test_failed_action_changes_nothing():
    env = _env()
    before = env.state_hash()
    suspended = _row(env, "customer", "suspended")
    item = env.conn.execute("SELECT id FROM menu_item WHERE is_available = 1 LIMIT 1").fetchone()[0]
    result = env.call("place_order", {"customer_id": suspended["id"], "menu_item_id": item, "quantity": 1})
    assert not result.ok and "not active" in result.error
    assert env.state_hash() == before


def test_action_effects_and_returns():
    env = _env()
    active = _row(env, "customer", "active")
    restaurant = _row(env, "restaurant", "active")
    item = env.conn.execute("SELECT * FROM menu_item WHERE is_available = 1 AND restaurant_id = ? LIMIT 1",
                            (restaurant["id"],)).fetchone()
    result = env.call("place_order", {"customer_id": active["id"], "menu_item_id": item["id"], "quantity": 3})
    assert result.ok, result.error
    order = env.call("get_order", {"order_id": result.content["order_id"]}).content
    assert order["status"] == "placed" and order["customer_id"] == active["id"]
    assert abs(order["total"] - round(item["price"] * 3, 6)) < 1e-6
    lines = env.call("list_order_items_by_order", {"order_id": order["id"]}).content
    assert lines["total"] == 1 and lines["items"][0]["quantity"] == 3


def test_sql_in_values_is_data_not_code():
    env = _env()
    before = env.state_hash()
    hostile = "x'; DROP TABLE customer; --"
    assert env.call("find_customer_by_email", {"email": hostile}).error.startswith("no customer")
    assert env.call("search_customers", {"name": hostile}).content["total"] == 0
    assert env.state_hash() == before
    assert env.conn.execute("SELECT COUNT(*) FROM customer").fetchone()[0] == 300


def test_unique_and_reference_checks_are_tool_errors():
    env = _env()
    a, b = env.conn.execute("SELECT id, phone FROM customer ORDER BY id LIMIT 2").fetchall()
    clash = env.call("update_customer_phone", {"customer_id": a["id"], "phone": b["phone"]})
    assert not clash.ok and "already has phone" in clash.error
    missing = env.call("list_orders_by_customer", {"customer_id": 999999})
    assert not missing.ok and "not found" in missing.error


def test_bad_calls_become_readable_errors():
    env = _env()
    assert "unknown tool" in env.call("drop_everything", {}).error
    assert "must be a JSON object" in env.call("get_order", ["1"]).error
    assert "order_id" in env.call("get_order", {}).error
    assert "Extra inputs" in env.call("get_order", {"order_id": 1, "sneaky": 2}).error
    obs, reward, terminated, truncated, info = env.step({"name": 5, "arguments": "x"})
    assert "malformed tool call" in obs and info["ok"] is False and not terminated


def test_fork_is_independent_and_reset_restores():
    env = _env()
    initial = env.state_hash()
    fork = env.fork()
    placed = _row(fork, "order", "placed")
    assert fork.call("cancel_order", {"order_id": placed["id"]}).ok
    assert fork.state_hash() != initial and env.state_hash() == initial
    changes = fork.diff_from(env.snapshot())
    assert [(c.table, c.id, c.fields["status"]) for c in changes] == [("order", placed["id"], ("placed", "cancelled"))]
    fork.reset()
    assert fork.state_hash() == initial


def test_gym_step_runs_tool_calls():
    env = _env()
    obs, info = env.reset(seed=3)
    assert len(obs["tools"]) == len(env.tool_names) and info["seed"] == 3
    text, reward, terminated, truncated, info = env.step({"name": "get_customer", "arguments": {"customer_id": 1}})
    assert '"id": 1' in text and info["ok"] and reward == 0.0 and not terminated and not truncated


def test_later_effects_see_rows_updated_earlier_in_the_same_action():
    from toolgym.domains import compile_spec

    spec = {
        "name": "mini", "title": "Mini", "description": "one table",
        "entities": [{"name": "account", "rows": 3, "fields": [
            {"name": "email", "type": "str", "unique": True, "knowable": True},
            {"name": "balance", "type": "float", "gen": {"kind": "float", "min": 10, "max": 20}}]}],
        "actions": [{
            "name": "open_and_fund", "description": "open an account and fund it", "intent": "open {email}",
            "params": [{"name": "email", "type": "str"}, {"name": "amount", "type": "float", "min": 0}],
            "effects": [
                {"insert": "account", "as": "a", "values": {"email": "$email", "balance": 0}},
                {"update": "account", "id": "$a.id", "set": {"balance": {"add": ["$a.balance", "$amount"]}}},
                {"update": "account", "id": "$a.id", "set": {"balance": {"add": ["$a.balance", "$amount"]}}}],
            "returns": {"balance": "$a.balance"}}],
    }
    domain = compile_spec(spec)
    env = Environment(domain, list(domain.tools))
    result = env.call("open_and_fund", {"email": "x@example.com", "amount": 5})
    assert result.ok and result.content == {"balance": 10}


def test_environments_share_the_seeded_database_until_they_write():
    env, other = _env(), _env()
    assert env.reader is other.reader
    placed = _row(other, "order", "placed")
    assert env.call("cancel_order", {"order_id": placed["id"]}).ok
    assert env.reader is not other.reader
    assert other.call("get_order", {"order_id": placed["id"]}).content["status"] == "placed"
    other.close()
    assert _env().call("get_order", {"order_id": placed["id"]}).content["status"] == "placed"
    fork = env.fork()
    assert fork.call("get_order", {"order_id": placed["id"]}).content["status"] == "cancelled"
    env.reset()
    assert env.reader is _env().reader
    assert env.call("get_order", {"order_id": placed["id"]}).content["status"] == "placed"
    assert fork.call("get_order", {"order_id": placed["id"]}).content["status"] == "cancelled"
