"""Class 3 of issue 17: parsing model-written tool calls returns parse errors, never raises, whatever the input."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolgym.agent.toolcall import MAX_NESTING, parse_assistant, parse_native

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
DEEP = 100_000

# Pieces a model (or an attacker writing through one) might emit, glued in any order.
TOKENS = ["<tool_call>", "</tool_call>", "<think>", "</think>", "{", "}", "[", "]", '"', "\\", ":", ",",
          '"name"', '"arguments"', '"get_user"', "null", "1e999", "-", "0", "true", " ", "\n", "\ud800", "\x00"]


def _nested(opening: str, closing: str, depth: int, core: str = "1") -> str:
    return opening * depth + core + closing * depth


def test_deeply_nested_tool_call_is_a_parse_error():
    for text in (f"<tool_call>{_nested('[', ']', DEEP)}</tool_call>",
                 '<tool_call>{"name": "f", "arguments": ' + _nested('{"a":', "}", DEEP) + "}</tool_call>",
                 '<tool_call>{"name": "f", "arguments": ' + json.dumps(_nested("[", "]", DEEP)) + "}</tool_call>"):
        turn = parse_assistant(text)
        assert turn.tool_calls == []
        assert len(turn.errors) == 1 and "nested deeper" in turn.errors[0]


def test_nesting_up_to_the_limit_parses_and_one_more_level_does_not():
    args = {"a": json.loads(_nested("[", "]", MAX_NESTING - 1))}
    turn = parse_assistant("<tool_call>" + json.dumps({"name": "f", "arguments": args}) + "</tool_call>")
    assert turn.errors == [] and turn.tool_calls[0].arguments == args
    for encode in (lambda a: a, json.dumps):
        too_deep = {"name": "f", "arguments": encode({"a": [args["a"]]})}
        assert "nested deeper" in parse_assistant(f"<tool_call>{json.dumps(too_deep)}</tool_call>").errors[0]


def test_brackets_inside_strings_do_not_count_as_nesting():
    args = {"note": "[" * 500 + '\\"{' * 200}
    turn = parse_assistant("<tool_call>" + json.dumps({"name": "f", "arguments": args}) + "</tool_call>")
    assert turn.errors == [] and turn.tool_calls[0].arguments == args


def test_deeply_nested_native_arguments_are_a_parse_error():
    deep_value: list = []
    for _ in range(DEEP):
        deep_value = [deep_value]
    cases = [{"function": {"name": "f", "arguments": _nested("[", "]", DEEP)}},
             {"function": {"name": "f", "arguments": {"a": deep_value}}},
             deep_value]
    calls, errors = parse_native(cases)
    assert calls == [] and len(errors) == 3


def test_native_calls_of_the_wrong_shape_are_parse_errors():
    calls, errors = parse_native(["not a call", None, 7, {"function": "get_user"},
                                  {"function": {"name": 3}}, {"function": {"name": "f", "arguments": "[1]"}},
                                  {"function": {"name": "f", "arguments": '{"a": 1}'}}])
    assert [c.name for c in calls] == ["f"] and calls[0].arguments == {"a": 1}
    assert len(errors) == 6


@FUZZ
@given(st.lists(st.sampled_from(TOKENS) | st.text(max_size=8), max_size=60))
def test_parse_assistant_never_raises(pieces):
    turn = parse_assistant("".join(pieces))
    for call in turn.tool_calls:
        assert isinstance(call.name, str) and isinstance(call.arguments, dict)


@FUZZ
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
                    | st.sampled_from([_nested("[", "]", 5000), '{"a": [}', "{}"]),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20))
def test_parse_native_never_raises(payload):
    calls, errors = parse_native(payload if isinstance(payload, list) else [payload])
    assert all(isinstance(c.arguments, dict) for c in calls)
    assert isinstance(errors, list)
