"""Tool calls/s and environment forks/s: toolgym (SQLite + backup API) vs a tau2-bench-style baseline.

The baseline re-implements tau2-bench's approach minimally: the database is a pydantic model holding one
dict of pydantic rows per table; a tool call looks rows up in Python (linear scans for lookups by a field,
as tau2's find-by-email tools do), mutates models in place, and serializes the result with model_dump +
json; a fork is a deep copy of the whole database model. Both sides run the same call mix on the same
seeded data (food_delivery at 3,670 rows, then ten times that), in this process, and ratios are printed.
"""

from __future__ import annotations

import copy
import json
import random
import time
from typing import Any

from pydantic import BaseModel, create_model

from toolgym.domains import Domain, compile_spec, load_domain
from toolgym.envs.environment import Environment

DOMAIN = "food_delivery"
CALLS = 20_000
FORKS = 200
SCALES = (1, 10)


def _baseline_db(env: Environment) -> BaseModel:
    """The seeded database as pydantic models: {table: {id: Row}}."""
    tables: dict[str, Any] = {}
    for name, entity in env.domain.entities.items():
        cur = env.conn.execute(f'SELECT * FROM "{name}"')
        cols = [d[0] for d in cur.description]
        row_model = create_model(f"{name}_row", **{c: (Any, None) for c in cols})
        tables[name] = (dict[int, row_model], {r["id"]: row_model(**dict(r)) for r in cur})
    db_model = create_model("DB", **{k: (t, ...) for k, (t, _) in tables.items()})
    return db_model(**{k: v for k, (_, v) in tables.items()})


class BaselineTools:
    """tau2-style tools over the pydantic DB."""

    def __init__(self, db: BaseModel):
        self.db = db

    def get_customer(self, customer_id: int):
        row = self.db.customer.get(customer_id)
        if row is None:
            raise ValueError("customer not found")
        return row

    def find_customer_by_phone(self, phone: str):
        for row in self.db.customer.values():
            if row.phone == phone:
                return row
        raise ValueError("customer not found")

    def list_orders_by_customer(self, customer_id: int):
        if customer_id not in self.db.customer:
            raise ValueError("customer not found")
        return [o for o in self.db.order.values() if o.customer_id == customer_id][:20]

    def cancel_order(self, order_id: int):
        order = self.db.order.get(order_id)
        if order is None:
            raise ValueError("order not found")
        if order.status not in ("placed", "confirmed"):
            raise ValueError("cannot cancel")
        order.status = "cancelled"
        return order

    def call(self, name: str, args: dict[str, Any]) -> str:
        try:
            resp = getattr(self, name)(**args)
            if isinstance(resp, list):
                return json.dumps([r.model_dump() for r in resp], default=str)
            return json.dumps(resp.model_dump(), default=str)
        except Exception as exc:  # tau2 turns any tool exception into an error message
            return f"Error: {exc}"


def _workload(env: Environment, n: int, seed: int = 0) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    phones = [r[0] for r in env.conn.execute("SELECT phone FROM customer")]
    n_customers = len(phones)
    n_orders = env.conn.execute('SELECT COUNT(*) FROM "order"').fetchone()[0]
    mix = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.4:
            mix.append(("get_customer", {"customer_id": rng.randint(1, n_customers)}))
        elif kind < 0.6:
            mix.append(("find_customer_by_phone", {"phone": rng.choice(phones)}))
        elif kind < 0.8:
            mix.append(("list_orders_by_customer", {"customer_id": rng.randint(1, n_customers)}))
        else:
            mix.append(("cancel_order", {"order_id": rng.randint(1, n_orders)}))
    return mix


def _rate(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def _scaled(scale: int) -> Domain:
    """The benchmark domain with `scale` times as many seeded rows in every table."""
    spec = load_domain(DOMAIN).spec
    entities = [e.model_copy(update={"rows": e.rows * scale}) for e in spec.entities]
    return compile_spec(spec.model_copy(update={"entities": entities}))


def run() -> dict[str, float]:
    results = {}
    for scale in SCALES:
        results[scale] = _run_scale(scale)
    return results


def _run_scale(scale: int) -> dict[str, float]:
    domain = _scaled(scale)
    env = Environment(domain, list(domain.tools))
    work = _workload(env, CALLS)
    ours_env = env.fork()
    base_db = _baseline_db(env)
    base = BaselineTools(copy.deepcopy(base_db))

    ours_calls = _rate(lambda: [ours_env.call(n, a).text() for n, a in work], CALLS)
    base_calls = _rate(lambda: [base.call(n, a) for n, a in work], CALLS)
    ours_forks = _rate(lambda: [env.fork().close() for _ in range(FORKS)], FORKS)
    base_forks = _rate(lambda: [copy.deepcopy(base_db) for _ in range(FORKS // 10)], FORKS // 10)

    rows = sum(env.conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in domain.entities)
    print(f"environment benchmark: {DOMAIN} x{scale}, {rows} rows, {CALLS} calls (40% get, 20% find-by-phone, "
          f"20% list-by-customer, 20% cancel)")
    print(f"  tool calls/s   toolgym {ours_calls:10.0f}   tau2-style baseline {base_calls:10.0f}   "
          f"ratio {ours_calls / base_calls:6.2f}x")
    print(f"  forks/s        toolgym {ours_forks:10.0f}   tau2-style baseline {base_forks:10.1f}   "
          f"ratio {ours_forks / base_forks:6.1f}x   (toolgym fork {1000 / ours_forks:.3f} ms)")
    return {"calls_ratio": ours_calls / base_calls, "forks_ratio": ours_forks / base_forks,
            "fork_ms": 1000 / ours_forks}


if __name__ == "__main__":
    run()
