"""Class 2 of issue 17: a spec that validates compiles, seeds and samples without an exception; any other spec
gets a SpecError whose problems name their YAML path."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolgym.domains import SpecError, compile_spec
from toolgym.envs.sample import EnvironmentSampler, SamplerConfig


def base_spec() -> dict[str, Any]:
    """A small valid domain: customers with orders that move through a status machine, and one declared action."""
    return {
        "name": "shop", "title": "Shop", "description": "A tiny shop.",
        "entities": [
            {"name": "customer", "persona": True, "label": "name", "rows": 30, "fields": [
                {"name": "name", "type": "str", "knowable": True, "searchable": True,
                 "gen": {"kind": "faker", "provider": "name"}},
                {"name": "email", "type": "str", "unique": True, "knowable": True,
                 "gen": {"kind": "faker", "provider": "email"}},
                {"name": "tier", "type": "enum", "values": ["basic", "gold"], "searchable": True, "updatable": True},
                {"name": "balance", "type": "float", "gen": {"kind": "float", "min": 0, "max": 100}},
                {"name": "joined", "type": "date", "gen": {"kind": "date", "min": -900, "max": 0}},
            ]},
            {"name": "order", "rows": 40, "fields": [
                {"name": "customer_id", "type": "ref", "ref": "customer"},
                {"name": "code", "type": "str", "unique": True, "knowable": True,
                 "gen": {"kind": "pattern", "pattern": "OR-####"}},
                {"name": "total", "type": "float", "gen": {"kind": "float", "min": 1, "max": 500}},
                {"name": "placed_at", "type": "datetime", "gen": {"kind": "datetime", "min": -30, "max": 0}},
             ],
             "status": {"states": ["pending", "shipped", "cancelled"], "initial": "pending",
                        "transitions": [{"name": "ship", "from": ["pending"], "to": "shipped"},
                                        {"name": "cancel", "from": ["pending"], "to": "cancelled"}]}},
        ],
        "actions": [{
            "name": "refund_order", "description": "Refund a shipped order.", "intent": "refund order {order_id}",
            "params": [{"name": "order_id", "type": "int", "ref": "order.id"}],
            "load": [{"as": "o", "entity": "order", "id": "$order_id"}],
            "require": [{"left": "$o.status", "op": "eq", "right": "shipped", "message": "not shipped"}],
            "effects": [{"update": "order", "id": "$order_id", "set": {"status": "cancelled"}}],
            "returns": {"order_id": "$o.id", "total": "$o.total"},
        }],
    }


def _spec_error(raw: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as caught:
        compile_spec(raw)
    return caught.value


def _paths(raw: dict[str, Any]) -> list[str]:
    return [p.path for p in _spec_error(raw).problems]


def test_the_base_spec_compiles_seeds_and_samples():
    domain = compile_spec(base_spec())
    env = EnvironmentSampler(domain, 0, SamplerConfig(min_tools=10)).sample()
    assert len(env.tool_names) >= 10


@pytest.mark.parametrize("name,path", [
    ("get", "entities[1].status.transitions[0].name"),    # ship -> get_order, a derived tool
    ("cancel", "entities[1].status.transitions[1].name"),  # two transitions named cancel: the second is reported
])
def test_colliding_transition_names_are_reported(name, path):
    raw = base_spec()
    raw["entities"][1]["status"]["transitions"][0]["name"] = name
    error = _spec_error(raw)
    assert path in [p.path for p in error.problems] and "clashes" in str(error)


def test_an_action_named_like_a_generated_tool_is_reported():
    raw = base_spec()
    raw["actions"][0]["name"] = "cancel_order"
    assert _paths(raw) == ["actions[0].name"]


def test_weights_that_sum_to_zero_are_reported():
    raw = base_spec()
    raw["entities"][0]["fields"][2]["gen"] = {"kind": "choice", "values": ["basic", "gold"], "weights": [0, 0]}
    raw["entities"][1]["status"]["seed_weights"] = {"pending": 0, "shipped": 0}
    assert _paths(raw) == ["entities[0].fields[2].gen.weights", "entities[1].status.seed_weights"]
    raw["entities"][0]["fields"][2]["gen"]["weights"] = [-1, 2]
    assert _paths(raw) == ["entities[0].fields[2].gen.weights[0]"]


def test_a_unique_field_with_too_few_values_is_reported():
    raw = base_spec()
    raw["entities"][0]["fields"][2]["unique"] = True  # two enum values for 30 customers
    error = _spec_error(raw)
    assert [p.path for p in error.problems] == ["entities[0].fields[2]"] and "only 2 distinct values" in str(error)
    raw = base_spec()
    raw["entities"][1]["fields"][0]["unique"] = True  # one order per customer, but 40 orders for 30 customers
    assert _paths(raw) == ["entities[1].fields[0]"]


def test_an_effect_setting_a_status_that_is_not_a_state_is_reported():
    raw = base_spec()
    raw["actions"][0]["effects"][0]["set"]["status"] = "refunded"
    error = _spec_error(raw)
    assert [p.path for p in error.problems] == ["actions[0].effects[0].set.status"] and "refunded" in str(error)


@pytest.mark.parametrize("field,gen,typ", [
    (3, {"kind": "faker", "provider": "name"}, "float"),     # text into a number column
    (4, {"kind": "date", "min": -10_000_000, "max": 0}, "date"),  # off the calendar
    (0, {"kind": "faker", "provider": "seed_instance"}, "str"),  # not a value provider
    (1, {"kind": "pattern", "pattern": "??"}, "int"),         # letters into an integer column
])
def test_generators_whose_values_the_column_cannot_hold_are_reported(field, gen, typ):
    raw = base_spec()
    raw["entities"][0]["fields"][field]["gen"] = gen
    raw["entities"][0]["fields"][field]["type"] = typ
    assert any(p.startswith(f"entities[0].fields[{field}].gen") for p in _paths(raw))


def test_templates_with_positional_or_formatted_placeholders_are_reported():
    for intent in ("refund {}", "refund {order_id:d}", "refund {order_id!z}"):
        raw = base_spec()
        raw["actions"][0]["intent"] = intent
        assert _paths(raw) == ["actions[0].intent"]


def test_tool_names_too_long_for_function_calling_and_transitions_from_nowhere_are_reported():
    raw = base_spec()
    raw["entities"][0]["fields"][1]["name"] = "electronic_mail_address_" + "x" * 30
    assert _paths(raw) == ["entities[0]"]
    raw = base_spec()
    raw["entities"][1]["status"]["transitions"][0]["from"] = []
    assert _paths(raw) == ["entities[1].status.transitions[0].from"]


def test_a_bad_clock_is_reported():
    raw = base_spec()
    raw["clock"] = "yesterday"
    assert _paths(raw) == ["clock"]


# --- the property: validates => compiles, seeds and samples; else a SpecError with paths -----------------------

GENERATORS = st.one_of(
    st.builds(lambda k, lo, hi: {"kind": k, "min": lo, "max": hi}, st.sampled_from(["int", "float", "date", "datetime"]),
              st.integers(-10**7, 10**3), st.integers(-10**3, 10**20)),
    st.builds(lambda vals, w: {"kind": "choice", "values": vals, **({"weights": w} if w is not None else {})},
              st.lists(st.sampled_from(["basic", "gold", "x", 1, 2.5, None, True]), min_size=1, max_size=3),
              st.none() | st.lists(st.sampled_from([0.0, 1.0, -1.0, 2.0]), min_size=1, max_size=3)),
    st.builds(lambda p: {"kind": "faker", "provider": p},
              st.sampled_from(["name", "email", "pyint", "date", "seed_instance", "random", "nope", "pybool"])),
    st.builds(lambda p: {"kind": "pattern", "pattern": p}, st.sampled_from(["#", "##-??", "ABC", "", "????-####"])),
    st.builds(lambda n: {"kind": "words", "values": ["a", "b", "c"], "n": n}, st.integers(-1, 4)),
    st.builds(lambda p: {"kind": "bool", "p": p}, st.sampled_from([0.0, 0.5, 1.0, 2.0])),
)
FIELD_TYPES = st.sampled_from(["int", "float", "str", "bool", "date", "datetime", "enum"])


def _set(raw: dict[str, Any], path: tuple, value: Any) -> None:
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


MUTATIONS = st.one_of(
    st.tuples(st.just(("entities", 0, "fields", 2, "gen")), GENERATORS),
    st.tuples(st.just(("entities", 0, "fields", 3, "gen")), GENERATORS),
    st.tuples(st.just(("entities", 1, "fields", 1, "gen")), GENERATORS),
    st.tuples(st.just(("entities", 0, "fields", 3, "type")), FIELD_TYPES),
    st.tuples(st.just(("entities", 0, "fields", 4, "type")), FIELD_TYPES),
    st.tuples(st.just(("entities", 1, "fields", 2, "unique")), st.booleans()),
    st.tuples(st.just(("entities", 0, "fields", 2, "unique")), st.booleans()),
    st.tuples(st.just(("entities", 1, "fields", 0, "unique")), st.booleans()),
    st.tuples(st.just(("entities", 0, "rows")), st.integers(-1, 60)),
    st.tuples(st.just(("entities", 1, "rows")), st.integers(0, 60)),
    st.tuples(st.just(("entities", 1, "status", "transitions", 0, "name")),
              st.sampled_from(["get", "cancel", "ship", "create", "hold", "list_orders_by"])),
    st.tuples(st.just(("entities", 1, "status", "seed_weights")),
              st.none() | st.dictionaries(st.sampled_from(["pending", "shipped", "lost"]),
                                          st.sampled_from([0.0, 1.0, -2.0]), max_size=3)),
    st.tuples(st.just(("actions", 0, "effects", 0, "set", "status")),
              st.sampled_from(["shipped", "refunded", "$now", 3, {"concat": ["ship", "ped"]}])),
    st.tuples(st.just(("actions", 0, "name")), st.sampled_from(["refund_order", "get_customer", "cancel_order"])),
    st.tuples(st.just(("actions", 0, "intent")), st.sampled_from(["x {order_id}", "x {}", "x {order_id:>4}", "{a"])),
    st.tuples(st.just(("entities", 0, "fields", 2, "name")), st.sampled_from(["tier", "limit", "customer_id", "id"])),
    st.tuples(st.just(("entities", 0, "name")), st.sampled_from(["customer", "sqlite_x", "order"])),
    st.tuples(st.just(("entities", 1, "status", "transitions", 1, "from")), st.sampled_from([[], ["pending"], ["x"]])),
    st.tuples(st.just(("entities", 0, "fields", 1, "name")), st.sampled_from(["email", "e" * 60])),
    st.tuples(st.just(("clock",)), st.sampled_from(["2025-06-01T12:00:00", "2025-13-01", "0001-01-01T00:00:00"])),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(MUTATIONS, min_size=1, max_size=4))
def test_a_spec_either_builds_and_samples_or_names_its_problems(mutations):
    raw = base_spec()
    for path, value in mutations:
        _set(raw, path, copy.deepcopy(value))
    try:
        domain = compile_spec(raw)
    except SpecError as exc:
        assert exc.problems and all(p.path and p.message for p in exc.problems)
        return
    env = EnvironmentSampler(domain, 0, SamplerConfig(min_tools=min(10, len(domain.tools)))).sample()
    assert env.tool_names
    env.close()
