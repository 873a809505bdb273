"""Tool noise: an Environment wrapper whose responses are sometimes imperfect in the ways real services are
(transient errors, timeouts, truncated or malformed output, partial pages, extra fields, reordered keys, stale
reads), seeded and levelled 0..1, and always recoverable by retrying.

Writes only ever fail before running ("transient", "timeout"), so a retry never applies a write twice; reads may
come back distorted. At most `max_consecutive` identical calls in a row are noisy, so the next retry is clean.
"""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import dataclass
from typing import Any, NamedTuple

from toolgym.domains.execute import ToolError, validate_args
from toolgym.domains.model import Domain, Tool
from toolgym.envs.environment import Environment, ToolResult
from toolgym.envs.state import Snapshot

TOOL_KINDS: tuple[str, ...] = ("transient", "timeout", "truncated", "malformed", "partial_page", "extra_fields",
                               "reordered", "stale")
FAILURE_KINDS: frozenset[str] = frozenset({"transient", "timeout"})
TRANSIENT_ERRORS: tuple[tuple[int, str], ...] = ((408, "Request Timeout"), (429, "Too Many Requests"),
                                                 (503, "Service Unavailable"))


class NoiseEvent(NamedTuple):
    """One call through a noisy environment: the tool and the noise kind applied (None for a clean response)."""

    tool: str
    kind: str | None


@dataclass(frozen=True)
class ToolNoise:
    """Tool-noise settings: each call is noisy with probability level * 0.5, never more than `max_consecutive` in a row."""

    level: float
    seed: int
    kinds: set[str] | frozenset[str] | None = None
    max_consecutive: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.level <= 1.0:
            raise ValueError(f"noise level must be in [0, 1], got {self.level}")
        unknown = set(self.kinds or ()) - set(TOOL_KINDS)
        if unknown:
            raise ValueError(f"unknown tool noise kinds {sorted(unknown)}; known: {', '.join(TOOL_KINDS)}")
        if self.kinds is not None:
            object.__setattr__(self, "kinds", frozenset(self.kinds))  # keeps the frozen settings hashable
        if self.max_consecutive < 0:
            raise ValueError("max_consecutive must be >= 0")

    @property
    def enabled(self) -> tuple[str, ...]:
        """The enabled kinds in a fixed order (sets of strings iterate differently from process to process)."""
        return tuple(k for k in TOOL_KINDS if self.kinds is None or k in self.kinds)

    def wrap(self, env: Environment) -> NoisyEnvironment:
        """`env` behind this noise, with an rng that depends only on the seed."""
        return NoisyEnvironment(env, self, f"tool-noise/{self.seed}")


class NoisyEnvironment:
    """An Environment whose tool responses carry seeded noise; everything else is delegated to `env`."""

    def __init__(self, env: Environment, noise: ToolNoise, key: str):
        self.env = env
        self.noise = noise
        self.key = key
        self.rng = random.Random(key)
        self.log: list[NoiseEvent] = []
        self._streaks: dict[str, int] = {}
        self._forks = 0
        self._pristine: Environment | None = None

    @property
    def domain(self) -> Domain:
        return self.env.domain

    @property
    def tool_names(self) -> list[str]:
        return self.env.tool_names

    @property
    def tools(self) -> dict[str, Tool]:
        return self.env.tools

    @property
    def conn(self) -> sqlite3.Connection:
        return self.env.conn

    @property
    def reader(self) -> sqlite3.Connection:
        return self.env.reader

    @property
    def tables(self) -> list[str]:
        return self.env.tables

    @property
    def touched(self) -> set[str]:
        return self.env.touched

    @property
    def data_seed(self) -> int:
        return self.env.data_seed

    def openai_tools(self) -> list[dict[str, Any]]:
        return self.env.openai_tools()

    def snapshot(self) -> Snapshot:
        return self.env.snapshot()

    def state_hash(self) -> str:
        return self.env.state_hash()

    def fork(self) -> NoisyEnvironment:
        """A noisy copy of the current state, with its own rng derived from this one's key and fork count."""
        self._forks += 1
        return NoisyEnvironment(self.env.fork(), self.noise, f"{self.key}/fork{self._forks}")

    def close(self) -> None:
        self.env.close()
        if self._pristine is not None:
            self._pristine.close()

    def call(self, name: str, arguments: Any = None) -> ToolResult:
        """Run a tool, maybe noisily; unknown tools and invalid arguments go straight to the environment."""
        tool = self.env.tools.get(name)
        args = {} if arguments is None else arguments
        try:
            if tool is None:
                raise ToolError(f"unknown tool {name}")
            validate_args(tool, args)
        except ToolError:
            return self.env.call(name, arguments)
        key = name + json.dumps(args, sort_keys=True, default=str)
        noisy = self.rng.random() < self.noise.level * 0.5 and self._streaks.get(key, 0) < self.noise.max_consecutive
        kinds = [k for k in self.noise.enabled if not tool.writes or k in FAILURE_KINDS] if noisy else []
        self.rng.shuffle(kinds)
        clean: ToolResult | None = None
        for kind in kinds:
            if kind in FAILURE_KINDS:
                result = self._failure(kind)
            else:
                clean = clean if clean is not None else self.env.call(name, args)
                if not clean.ok:
                    break
                result = self._distort(kind, tool, args, clean)
            if result is not None:
                self._streaks[key] = self._streaks.get(key, 0) + 1
                self.log.append(NoiseEvent(name, kind))
                return result
        self._streaks[key] = 0
        self.log.append(NoiseEvent(name, None))
        return clean if clean is not None else self.env.call(name, args)

    def _failure(self, kind: str) -> ToolResult:
        """An error response for a call that was not executed, telling the agent to retry."""
        if kind == "timeout":
            return ToolResult(ok=False, error="request timed out after 30s; it was not processed, please retry")
        code, reason = self.rng.choice(TRANSIENT_ERRORS)
        return ToolResult(ok=False, error=f"HTTP {code} {reason}: the request was not processed, please retry")

    def _distort(self, kind: str, tool: Tool, args: dict[str, Any], clean: ToolResult) -> ToolResult | None:
        """The read result `clean` with noise `kind`, or None when that kind does not fit this result."""
        content = clean.content
        if kind in ("truncated", "malformed"):
            if not isinstance(content, (dict, list)):
                return None
            text = json.dumps(content, default=str)
            if kind == "truncated":
                return ToolResult(ok=True, raw_text=text[:self.rng.randrange(1, len(text))] + " ...[truncated]")
            broken = text[:-1] if self.rng.random() < 0.5 else f"{text[:-1]},{text[-1]}"  # missing brace / stray comma
            return ToolResult(ok=True, raw_text=broken)
        if not isinstance(content, dict):
            return None
        if kind == "partial_page":
            items = content.get("items")
            if not (isinstance(items, list) and len(items) >= 2 and {"total", "offset"} <= content.keys()
                    and any(p.name == "offset" for p in tool.params)):
                return None
            kept = self.rng.randint(1, len(items) - 1)
            return ToolResult(ok=True, content={**content, "items": items[:kept],
                                                "next_offset": content["offset"] + kept})
        if kind == "extra_fields":
            return ToolResult(ok=True, content={**content, "_trace_id": f"{self.rng.getrandbits(64):016x}",
                                                "cache": "hit", "_latency_ms": self.rng.randint(5, 900)})
        if kind == "reordered":
            if len(content) < 2:
                return None
            keys = list(content)
            self.rng.shuffle(keys)
            if keys == list(content):
                keys.reverse()
            return ToolResult(ok=True, content={k: _reorder(content[k], self.rng) for k in keys})
        if self._pristine is None:  # "stale": the same read on the environment's initial database
            self._pristine = Environment(self.env.domain, self.env.tool_names, self.env.data_seed, self.env.id)
        old = self._pristine.call(tool.name, args)
        return old if old.ok and old.content != content else None


def _reorder(value: Any, rng: random.Random) -> Any:
    """`value` with the keys of every nested object shuffled."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {k: _reorder(value[k], rng) for k in keys}
    if isinstance(value, list):
        return [_reorder(v, rng) for v in value]
    return value
