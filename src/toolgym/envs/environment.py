"""Environment: a subset of a domain's tools over its own SQLite database, with calls, forks, snapshots and a
Gymnasium-style reset/step.

Every environment starts from the domain's seeded database for its `data_seed`, built once per process and shared:
an environment copies a table only when a tool first writes it (envs.overlay), so reading costs no memory and a
fork copies only what was written. Tool failures of any kind come back as an error result for the agent; nothing
raises out of `call` or `step`.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from typing import Any

from pydantic import BaseModel, Field

from toolgym.domains.database import connect, create_schema, decode_row, populate
from toolgym.domains.execute import ToolError, execute
from toolgym.domains.model import Domain, Tool
from toolgym.domains.registry import load_domain
from toolgym.envs.overlay import OverlayDatabase, SharedDatabase
from toolgym.envs.state import RowChange, Snapshot, diff, snapshot, state_hash

_BASE: dict[tuple[int, int, int], SharedDatabase] = {}


def shared_database(domain: Domain, data_seed: int) -> SharedDatabase:
    """The domain's seeded database for `data_seed`, generated once per process and shared by its environments."""
    key = (os.getpid(), id(domain), data_seed)
    if key not in _BASE:
        shared = SharedDatabase()
        create_schema(shared.conn, domain)
        populate(shared.conn, domain, data_seed)
        _BASE[key] = shared
    return _BASE[key]


def base_database(domain: Domain, data_seed: int) -> sqlite3.Connection:
    """A connection to the shared seeded database, to read only (environments guard it; callers must too)."""
    return shared_database(domain, data_seed).conn


_BASE_STATE: dict[tuple[int, int], tuple[Snapshot, str]] = {}


def base_state(domain: Domain, data_seed: int) -> tuple[Snapshot, str]:
    """Snapshot and hash of the seeded database (computed once; environments diff against it)."""
    key = (id(domain), data_seed)
    if key not in _BASE_STATE:
        snap = snapshot(base_database(domain, data_seed), domain.entity_order())
        _BASE_STATE[key] = (snap, state_hash(snap))
    return _BASE_STATE[key]


def copy_database(src: sqlite3.Connection) -> sqlite3.Connection:
    dst = connect()
    src.backup(dst)
    return dst


class ToolCall(BaseModel):
    """A call of one tool with JSON arguments (the OpenAI function-call shape)."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolResult(BaseModel):
    """What the agent sees: `content` on success, `error` (a sentence for the agent) on failure.

    `raw_text`, when set, replaces the JSON rendering (tool noise uses it for truncated or malformed output).
    """

    ok: bool
    content: Any = None
    error: str | None = None
    raw_text: str | None = None

    def text(self) -> str:
        if self.raw_text is not None:
            return self.raw_text
        return json.dumps(self.content if self.ok else {"error": self.error}, default=str)


class EnvironmentRecord(BaseModel):
    """The serializable identity of an environment: enough to rebuild it exactly."""

    id: str
    family: str = "tool"
    """Which kind of environment this is (toolgym.envs.families): `tool`, `code` or `search`."""
    domain: str
    spec: str | None = None
    """Path of the spec file of a custom (non-built-in) domain; built-ins are found by name."""
    data_seed: int = 0
    tools: list[str]
    chains: list[list[ToolCall]] = []
    initial_hash: str | None = None
    params: dict[str, Any] = {}
    """Family-specific settings that rebuild the environment (empty for tool-use domains)."""


class Environment:
    """A tool-use environment: a tool subset of a domain and a database instance consistent with it."""

    def __init__(self, domain: Domain, tools: list[str], data_seed: int = 0, env_id: str = "env",
                 chains: list[list[ToolCall]] | None = None, conn: sqlite3.Connection | None = None,
                 overlay: OverlayDatabase | None = None):
        unknown = [t for t in tools if t not in domain.tools]
        if unknown:
            raise ValueError(f"domain {domain.name} has no tools {unknown}")
        self.domain = domain
        self.tool_names = sorted(tools)
        self.tools: dict[str, Tool] = {t: domain.tools[t] for t in self.tool_names}
        self.data_seed = data_seed
        self.id = env_id
        self.chains = chains or []
        self._full = conn
        self._overlay = overlay or OverlayDatabase(shared_database(domain, data_seed))
        self.tables = list(domain.entity_order())
        self.now = domain.spec.clock
        self.touched: set[str] = set()

    @property
    def conn(self) -> sqlite3.Connection:
        """A connection to this environment's whole database that the caller may write through: the first use
        merges the shared rows and the overlay into one private copy, which the environment uses from then on."""
        if self._full is None:
            self._full = self._overlay.materialize()
            self._overlay.close()
        return self._full

    @property
    def reader(self) -> sqlite3.Connection:
        """A connection to read the current state through, never to write through (it may be the shared one)."""
        return self._full if self._full is not None else self._overlay.reader

    def _writer(self, tool: Tool) -> sqlite3.Connection:
        return self._full if self._full is not None else self._overlay.writer(tool.write_tables)

    @classmethod
    def from_record(cls, record: EnvironmentRecord, domain: Domain | None = None) -> Environment:
        env = cls(domain or load_domain(record.spec or record.domain), record.tools, record.data_seed, record.id, record.chains)
        rebuilt = base_state(env.domain, env.data_seed)[1]
        if record.initial_hash and rebuilt != record.initial_hash:
            raise ValueError(f"environment {record.id}: rebuilt database differs from the recorded one "
                             f"({rebuilt} != {record.initial_hash}); was the domain spec changed?")
        return env

    def record(self) -> EnvironmentRecord:
        return EnvironmentRecord(id=self.id, domain=self.domain.name, spec=self.domain.source, data_seed=self.data_seed, tools=self.tool_names,
                                 chains=self.chains, initial_hash=base_state(self.domain, self.data_seed)[1])

    def openai_tools(self) -> list[dict[str, Any]]:
        return [t.openai_schema() for t in self.tools.values()]

    def call(self, name: str, arguments: Any = None) -> ToolResult:
        """Run a tool; any failure becomes an error result the agent can read."""
        tool = self.tools.get(name)
        if tool is None:
            return ToolResult(ok=False, error=f"unknown tool '{name}'. Available tools: {', '.join(self.tool_names)}")
        self.touched |= tool.write_tables
        try:
            conn = self._writer(tool) if tool.writes else self.reader
            return ToolResult(ok=True, content=execute(conn, self.domain, tool, {} if arguments is None else arguments,
                                                       self.now))
        except ToolError as exc:
            return ToolResult(ok=False, error=str(exc))
        except (sqlite3.Error, ValueError, TypeError, OverflowError) as exc:
            return ToolResult(ok=False, error=f"{name} failed: {exc}")

    def call_or_raise(self, name: str, arguments: dict[str, Any]) -> Any:
        """Like `call` but raising ToolError; used by chain execution, which wants failures as exceptions."""
        result = self.call(name, arguments)
        if not result.ok:
            raise ToolError(result.error)
        return result.content

    def random_row(self, entity: str, rng: random.Random, row_id: int | None = None) -> dict[str, Any] | None:
        """A uniformly random row of `entity` (or the row with `row_id`, None if it is gone)."""
        if row_id is not None:
            row = self.reader.execute(f'SELECT * FROM "{entity}" WHERE "id" = ?', (row_id,)).fetchone()
            return decode_row(self.domain.entities[entity], row)
        count = self.reader.execute(f'SELECT COUNT(*) FROM "{entity}"').fetchone()[0]
        if count == 0:
            raise ToolError(f"no {entity} rows")
        row = self.reader.execute(f'SELECT * FROM "{entity}" ORDER BY "id" LIMIT 1 OFFSET ?',
                                  (rng.randrange(count),)).fetchone()
        return decode_row(self.domain.entities[entity], row)

    def fork(self) -> Environment:
        """An independent copy with the current database state."""
        args = (self.domain, self.tool_names, self.data_seed, self.id, self.chains)
        if self._full is None:
            fork = Environment(*args, overlay=self._overlay.fork())
        else:
            fork = Environment(*args, conn=copy_database(self._full))
        fork.touched = set(self.touched)
        return fork

    def snapshot(self) -> Snapshot:
        return snapshot(self.reader, self.tables)

    def state_hash(self) -> str:
        return state_hash(self.snapshot())

    def diff_from(self, before: Snapshot) -> list[RowChange]:
        return diff(before, self.snapshot())

    def reset(self, seed: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Restore the initial database; returns (observation, info) like Gymnasium."""
        self.close()
        self._full, self._overlay = None, OverlayDatabase(shared_database(self.domain, self.data_seed))
        self.touched = set()
        return {"tools": self.openai_tools()}, {"env_id": self.id, "seed": seed}

    def step(self, action: ToolCall | dict[str, Any]) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Run one tool call; returns (observation text, reward 0, terminated False, truncated False, info)."""
        try:
            call = action if isinstance(action, ToolCall) else ToolCall.model_validate(action)
        except ValueError as exc:
            result = ToolResult(ok=False, error=f"malformed tool call: {exc}")
        else:
            result = self.call(call.name, call.arguments)
        return result.text(), 0.0, False, False, {"ok": result.ok}

    def close(self) -> None:
        """Close this environment's own database (the shared seeded one stays open for other environments)."""
        if self._full is not None:
            self._full.close()
        self._overlay.close()
