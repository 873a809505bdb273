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


@dataclass
class ParsedTurn:
    """An assistant message split into visible text, thinking, tool calls and parse errors."""

    content: str
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _to_call(payload: Any) -> ToolCall:
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        raise ValueError('a tool call is an object with a string "name" and an object "arguments"')
    args = payload.get("arguments", {})
    if isinstance(args, str):
        args = json.loads(args) if args.strip() else {}
    if not isinstance(args, dict):
        raise ValueError(f'"arguments" of {payload["name"]} must be an object')
    return ToolCall(name=payload["name"], arguments=args)


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
            turn.tool_calls.append(_to_call(json.loads(raw)))
        except (json.JSONDecodeError, ValueError) as exc:
            turn.errors.append(f"could not parse tool call {raw[:200]!r}: {exc}")
    return turn


def parse_native(tool_calls: list[dict[str, Any]]) -> tuple[list[ToolCall], list[str]]:
    """OpenAI-style `tool_calls` (arguments as JSON strings) to ToolCalls, with errors for broken ones."""
    calls, errors = [], []
    for tc in tool_calls:
        fn = tc.get("function", tc)
        try:
            calls.append(_to_call({"name": fn.get("name"), "arguments": fn.get("arguments") or {}}))
        except (json.JSONDecodeError, ValueError, AttributeError) as exc:
            errors.append(f"could not parse tool call {str(tc)[:200]!r}: {exc}")
    return calls, errors


def format_tool_call(call: ToolCall) -> str:
    """The text form a text model writes for one call."""
    return "<tool_call>" + json.dumps({"name": call.name, "arguments": call.arguments}, separators=(",", ":")) + "</tool_call>"
