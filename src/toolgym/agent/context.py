"""Hybrid context management (per the report): past a token threshold, older tool results are replaced by a
summary; past a turn limit, a discard-all reset restarts from the system prompt and the original request."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from toolgym.policy.base import GenerationRequest, Policy, SamplingParams

SUMMARY_PROMPT = ("Summarize the tool results below for an agent that must keep working on the user's request. "
                  "Keep every id, code, amount, status and date the agent may still need. Be brief.\n\n{results}")
RESET_NOTE = ("[context reset: earlier turns were discarded to save space; everything you did before still "
              "stands in the system. Re-check the state with tools if needed and continue.]")


class ContextConfig(BaseModel):
    summary_threshold_tokens: int = 80_000
    keep_recent_tool_results: int = 2
    reset_after_turns: int = 60
    summary_max_tokens: int = 256


Summarizer = Callable[[list[str]], str]


def extractive_summary(results: list[str]) -> str:
    """A summarizer that needs no model: each result's id-like and status-like fields, compacted."""
    lines = []
    for text in results:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            lines.append(text[:120])
            continue
        rows = data.get("items", [data]) if isinstance(data, dict) else data if isinstance(data, list) else [data]
        for row in rows[:10]:
            if isinstance(row, dict):
                keep = {k: v for k, v in row.items() if k == "id" or k.endswith(("_id", "status", "code", "number"))}
                lines.append(json.dumps(keep or row, separators=(",", ":"))[:200])
    return "\n".join(lines)


def policy_summarizer(policy: Policy, max_tokens: int = 256) -> Summarizer:
    """A summarizer that asks a Policy (the agent's own, or another model) to write the summary."""

    def summarize(results: list[str]) -> str:
        prompt = SUMMARY_PROMPT.format(results="\n".join(results))
        request = GenerationRequest(messages=[{"role": "user", "content": prompt}])
        return policy.generate([request], SamplingParams(temperature=0.0, max_new_tokens=max_tokens))[0].text

    return summarize


def summarize_tool_results(messages: list[dict[str, Any]], keep_recent: int, summarizer: Summarizer
                           ) -> list[dict[str, Any]] | None:
    """Messages with all but the last `keep_recent` tool results folded into one summary (None if nothing to fold)."""
    tool_idx = [i for i, m in enumerate(messages) if m["role"] == "tool"]
    old = tool_idx[:-keep_recent] if keep_recent else tool_idx
    old = [i for i in old if not messages[i]["content"].startswith("[summarized")]
    if not old:
        return None
    summary = summarizer([messages[i]["content"] for i in old])
    out = []
    for i, m in enumerate(messages):
        if i == old[-1]:
            out.append({**m, "content": f"[summarized earlier tool results]\n{summary}"})
        elif i in old:
            out.append({**m, "content": "[summarized]"})
        else:
            out.append(m)
    return out


def discard_all(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep only the system prompt and the original request, plus a note that the context was reset."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    first_user = next(m for m in messages if m["role"] == "user")
    return [*system, {"role": "user", "content": f"{first_user['content']}\n\n{RESET_NOTE}"}]
