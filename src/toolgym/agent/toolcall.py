"""Tool calls in model text (Hermes/Qwen `<tool_call>{json}</tool_call>`) and in native OpenAI `tool_calls`.

Parsing never raises: a malformed call becomes an error string the rollout shows the model as a tool message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from toolgym.envs.environment import ToolCall

_CALL = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)(</think>|$)", re.DOTALL)
MAX_NESTING = 64
"""Deepest nesting a call's arguments may have (the call object around them adds one level); deeper input is a
parse error, since Python's JSON and everything after it would recurse away."""


class ToolCallParseError(ValueError):
    """A tool call the model wrote that cannot become a ToolCall; its message is shown to the model."""


@dataclass
class ParsedTurn:
    """An assistant message split into visible text, thinking, tool calls and parse errors."""

    content: str
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _json_depth(text: str) -> int:
    """How deep brackets nest in JSON text (brackets inside strings do not count), without recursing."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def value_depth(value: Any, limit: int = MAX_NESTING) -> int:
    """How deep lists and dicts nest in an already-decoded value, without recursing (counting stops past `limit`)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth + 1)
            if deepest > limit:
                return deepest
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def load_json(text: str) -> Any:
    """JSON a model wrote, or ToolCallParseError (bad syntax, nesting deeper than a call with its arguments)."""
    if _json_depth(text) > MAX_NESTING + 1:
        raise ToolCallParseError(f"JSON nested deeper than {MAX_NESTING} levels")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ToolCallParseError(f"invalid JSON: {exc}") from None


def _to_call(payload: Any) -> ToolCall:
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        raise ToolCallParseError('a tool call is an object with a string "name" and an object "arguments"')
    args = payload.get("arguments", {})
    if isinstance(args, str):
        args = load_json(args) if args.strip() else {}
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise ToolCallParseError(f'"arguments" of {payload["name"][:100]!r} must be an object')
    if value_depth(args) > MAX_NESTING:
        raise ToolCallParseError(f"arguments nested deeper than {MAX_NESTING} levels")
    return ToolCall(name=payload["name"], arguments=args)


def _excerpt(value: Any) -> str:
    """At most 200 characters of what the model sent, for an error message (never recursing into deep values)."""
    if isinstance(value, str):
        return repr(value[:200])
    if value_depth(value) > MAX_NESTING:
        return f"<{type(value).__name__} nested deeper than {MAX_NESTING} levels>"
    return repr(str(value)[:200])


def strip_thinking(text: str) -> str:
    """The answer without its reasoning: every `<think>...</think>` block (or an unclosed trailing one) removed."""
    return _THINK.sub("", text).strip()


def parse_assistant(text: str) -> ParsedTurn:
    """Split model text into thinking, tool calls (each `<tool_call>` block) and the remaining visible answer."""
    thinking = " ".join(m.group(1).strip() for m in _THINK.finditer(text))
    body = _THINK.sub("", text)
    turn = ParsedTurn(content=_CALL.sub("", body).strip(), thinking=thinking)
    for m in _CALL.finditer(body):
        raw = m.group(1).strip()
        if not m.group(2):
            turn.errors.append(f"unterminated <tool_call>: {raw[:200]!r}")
            continue
        try:
            turn.tool_calls.append(_to_call(load_json(raw)))
        except ToolCallParseError as exc:
            turn.errors.append(f"could not parse tool call {raw[:200]!r}: {exc}")
    return turn


def parse_native(tool_calls: list[dict[str, Any]]) -> tuple[list[ToolCall], list[str]]:
    """OpenAI-style `tool_calls` (arguments as JSON strings) to ToolCalls, with errors for broken ones."""
    calls, errors = [], []
    for tc in tool_calls if isinstance(tool_calls, list) else [tool_calls]:
        fn = tc.get("function", tc) if isinstance(tc, dict) else tc
        try:
            if not isinstance(fn, dict):
                raise ToolCallParseError("a tool call is an object with a 'function' object")
            calls.append(_to_call({"name": fn.get("name"), "arguments": fn.get("arguments") or {}}))
        except ToolCallParseError as exc:
            errors.append(f"could not parse tool call {_excerpt(tc)}: {exc}")
    return calls, errors


def format_tool_call(call: ToolCall) -> str:
    """The text form a text model writes for one call."""
    return "<tool_call>" + json.dumps({"name": call.name, "arguments": call.arguments}, separators=(",", ":")) + "</tool_call>"
