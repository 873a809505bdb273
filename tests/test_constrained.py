"""Constrained tool-call decoding: the grammar accepts exactly the calls the schema (and, in copy mode, the
conversation) allows, and HFPolicy with a random model writes only such calls once it opens one."""

from __future__ import annotations

import json

import pytest
import torch

from toolgym.agent.toolcall import parse_assistant
from toolgym.policy.base import GenerationRequest, SamplingParams
from toolgym.policy.constrained import CallGrammar, Done, Prose, walk
from toolgym.policy.hf import HFPolicy

TOOLS = [
    {"type": "function", "function": {"name": "find_order", "parameters": {
        "type": "object", "required": ["code"],
        "properties": {"code": {"type": "string"}, "limit": {"type": "integer"}}}}},
    {"type": "function", "function": {"name": "set_status", "parameters": {
        "type": "object", "required": ["order_id", "status"],
        "properties": {"order_id": {"type": "integer"}, "status": {"enum": ["open", "closed"]},
                       "urgent": {"type": "boolean"}, "amount": {"type": "number"}}}}},
]
MESSAGES = [{"role": "system", "content": "tools"},
            {"role": "user", "content": "Please close order AB-1234, it cost 3.90."},
            {"role": "tool", "content": json.dumps({"id": 77, "code": "AB-1234", "total": 12.5})}]


def accepted(mode: str, text: str) -> bool:
    return isinstance(walk(CallGrammar.for_request(TOOLS, MESSAGES, mode).start(), text), Done)


@pytest.mark.parametrize("text", [
    '{"name":"find_order","arguments":{"code":"AB-1234"}}',
    '{"name": "find_order", "arguments": {"code": "AB-1234", "limit": 77}}',
    '{"name":"set_status","arguments":{"order_id":77,"status":"closed","urgent":true,"amount":3.9}}',
    '{"name":"set_status","arguments":{"status":"open","order_id":77,"amount":12.5}}',
])
def test_calls_the_schema_and_the_conversation_allow_are_accepted(text):
    assert accepted("copy", text) and accepted("schema", text)


@pytest.mark.parametrize("text", [
    '{"name":"find_orders","arguments":{"code":"AB-1234"}}',          # unknown tool
    '{"name":"find_order","arguments":{"id":"AB-1234"}}',              # unknown key
    '{"name":"find_order","arguments":{}}',                            # required key missing
    '{"name":"find_order","arguments":{"code":"AB-1234","code":"AB-1234"}}',  # key twice
    '{"name":"set_status","arguments":{"order_id":77,"status":"shut"}}',       # not an enum value
    '{"name":"set_status","arguments":{"order_id":"77","status":"open"}}',     # string for an integer
    '{"name":"set_status","arguments":{"order_id":77,"status":"open","urgent":yes}}',
    '{"name":"find_order","arguments":{"code":""}}',                   # empty string
])
def test_calls_outside_the_schema_are_rejected_in_every_mode(text):
    assert not accepted("schema", text) and not accepted("copy", text)


@pytest.mark.parametrize("text", [
    '{"name":"find_order","arguments":{"code":"AB-1243"}}',            # a value nobody wrote
    '{"name":"set_status","arguments":{"order_id":78,"status":"open"}}',
    '{"name":"set_status","arguments":{"order_id":7,"status":"open"}}',  # a prefix of 77 is not 77
    '{"name":"set_status","arguments":{"order_id":77,"status":"open","amount":3.95}}',
    '{"name":"find_order","arguments":{"code":"B-1234"}}',             # starts inside a word
    '{"name":"find_order","arguments":{"code":"AB-12"}}',              # ends inside a word
    '{"name":"find_order","arguments":{"code":"C"}}',                  # the C of "close"... of nothing whole
])
def test_copy_mode_only_accepts_values_written_in_the_conversation(text):
    assert accepted("schema", text) and not accepted("copy", text)


def test_no_tools_or_mode_none_means_no_grammar():
    assert CallGrammar.for_request([], MESSAGES, "copy") is None
    assert CallGrammar.for_request(TOOLS, MESSAGES, "none") is None


class _OpensACall(torch.nn.Module):
    """Wraps a model so that its first sampled token is `<tool_call>`: a random model then has to be steered by
    the grammar alone."""

    def __init__(self, model, open_id: int):
        super().__init__()
        self.inner, self.open_id, self.calls = model, open_id, 0

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        if self.calls == 0:
            out.logits[:, -1, self.open_id] += 1e4
        self.calls += 1
        return out

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


@pytest.mark.parametrize("mode", ["schema", "copy"])
def test_a_random_model_writes_only_valid_calls_under_the_constraint(tiny_dir, mode):
    policy = HFPolicy(tiny_dir, constrain=mode)
    open_id = policy.tokenizer.convert_tokens_to_ids("<tool_call>")
    policy.model = _OpensACall(policy.model, open_id)
    requests = [GenerationRequest(messages=MESSAGES, tools=TOOLS)] * 8
    completions = policy.generate(requests, SamplingParams(temperature=1.5, max_new_tokens=400, seed=3))
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for completion in completions:
        assert completion.text.startswith("<tool_call>") and "</tool_call>" in completion.text, completion.text
        turn = parse_assistant(completion.text.split("</tool_call>")[0] + "</tool_call>")
        assert not turn.errors and len(turn.tool_calls) == 1, completion.text
        call = turn.tool_calls[0]
        props = schemas[call.name]["properties"]
        assert set(schemas[call.name]["required"]) <= set(call.arguments) <= set(props)
        for key, value in call.arguments.items():
            if "enum" in props[key]:
                assert value in props[key]["enum"]
            elif mode == "copy" and isinstance(value, str):
                assert any(value in m["content"] for m in MESSAGES[1:]), value
        assert len(completion.token_ids) == len(completion.logprobs)


def test_without_the_constraint_a_random_model_writes_no_valid_call(tiny_dir):
    policy = HFPolicy(tiny_dir, constrain="none")
    policy.model = _OpensACall(policy.model, policy.tokenizer.convert_tokens_to_ids("<tool_call>"))
    completions = policy.generate([GenerationRequest(messages=MESSAGES, tools=TOOLS)] * 8,
                                  SamplingParams(temperature=1.5, max_new_tokens=60, seed=3))
    assert not any(parse_assistant(c.text).tool_calls for c in completions)


def test_copy_mode_quotations_outside_calls_must_quote_the_conversation():
    prose = CallGrammar.for_request(TOOLS, MESSAGES, "copy").prose()
    assert isinstance(prose, Prose)
    assert walk(prose, 'Done. The total is "12.5" for "AB-1234".') is not None
    assert walk(prose, "Done. Anything unquoted goes, even 999.") is not None
    assert walk(prose, 'Done. "AB-9999"') is None
    assert CallGrammar.for_request(TOOLS, MESSAGES, "schema").prose() is None


def test_a_random_model_quotes_only_the_conversation_in_copy_mode(tiny_dir):
    policy = HFPolicy(tiny_dir, constrain="copy")
    quote = policy.tokenizer.encode('"', add_special_tokens=False)
    assert len(quote) == 1
    completions = policy.generate([GenerationRequest(messages=MESSAGES, tools=TOOLS, prompt_ids=quote)] * 8,
                                  SamplingParams(temperature=1.5, max_new_tokens=40, seed=5))
    sources = [m["content"] for m in MESSAGES[1:]]
    quoted = [span for c in completions for span in c.text.split("<tool_call>")[0].split('"')[1::2]]
    assert quoted, "a random model at temperature 1.5 should open some quotation in 8 x 40 tokens"
    assert all(any(span in s for s in sources) for span in quoted), quoted


@pytest.mark.parametrize("text, ok", [
    ('{"name":"pick","arguments":{"n":2}}', True),
    ('{"name":"pick","arguments":{"n":12,"flag":false}}', True),
    ('{"name":"pick","arguments":{"n":"2"}}', False),    # an integer enum's value is not a string
    ('{"name":"pick","arguments":{"n":3}}', False),      # not one of the values
    ('{"name":"pick","arguments":{"n":1}}', False),      # a prefix of 12 is not 12
    ('{"name":"pick","arguments":{"n":2,"flag":"false"}}', False),
])
def test_enumerated_numbers_and_booleans_are_written_bare(text, ok):
    tools = [{"type": "function", "function": {"name": "pick", "parameters": {
        "type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "enum": [2, 12]},
                                                            "flag": {"enum": [False]}}}}}]
    for mode in ("schema", "copy"):
        assert isinstance(walk(CallGrammar.for_request(tools, MESSAGES, mode).start(), text), Done) == ok
