"""Compiled domain: typed tools with semantic parameter/output types, ready to execute and to graph."""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from functools import cached_property
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from toolgym.domains.spec import ActionSpec, DomainSpec, EntitySpec, Generator, ParamType, Transition

ToolKind = Literal["get", "find", "list", "search", "create", "update", "transition", "action"]
MAX_STR = 500
PAGE_LIMIT = 20
SQLITE_INT_MAX = 2**63 - 1

_PY_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool, "date": str, "datetime": str}
_JSON_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean", "date": "string",
               "datetime": "string", "enum": "string"}


@dataclass(frozen=True)
class Param:
    """A tool parameter. `semantic` ("entity.field") links it to tool outputs; `knowable` means a user can state it."""

    name: str
    type: ParamType
    description: str = ""
    semantic: str | None = None
    required: bool = True
    knowable: bool = True
    values: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    gen: Generator | None = None

    @property
    def needs_producer(self) -> bool:
        return self.required and not self.knowable

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": _JSON_TYPES[self.type], "description": self.description}
        if self.values:
            schema["enum"] = list(self.values)
        if self.type in ("date", "datetime"):
            schema["format"] = "date" if self.type == "date" else "date-time"
        if self.min is not None:
            schema["minimum"] = self.min
        if self.max is not None:
            schema["maximum"] = self.max
        return schema


@dataclass
class Tool:
    """One callable tool of a domain. Derived tools name their entity/field; actions carry their spec."""

    name: str
    kind: ToolKind
    description: str
    params: tuple[Param, ...]
    outputs: frozenset[str]
    intent: str
    entity: str | None = None
    field: str | None = None
    transition: Transition | None = None
    action: ActionSpec | None = None
    returns_list: bool = False
    writes: bool = False
    return_types: dict[str, str] = dc_field(default_factory=dict)

    @property
    def write_tables(self) -> frozenset[str]:
        """Tables this tool may change (empty for reads): lets verification skip untouched tables."""
        if not self.writes:
            return frozenset()
        if self.action is not None:
            return frozenset(e.insert or e.update for e in self.action.effects)
        return frozenset({self.entity})

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def openai_schema(self) -> dict[str, Any]:
        """The tool as an OpenAI function-calling schema."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": {p.name: p.json_schema() for p in self.params},
                    "required": [p.name for p in self.params if p.required],
                    "additionalProperties": False,
                },
            },
        }

    @cached_property
    def args_model(self) -> type[BaseModel]:
        """A pydantic model that validates (and coerces) this tool's arguments."""
        fields: dict[str, Any] = {}
        for p in self.params:
            if p.values:
                typ: Any = Literal[tuple(p.values)]
            elif p.type in ("str", "date", "datetime"):
                typ = str
            else:
                typ = _PY_TYPES[p.type]
            constraints: dict[str, Any] = {}
            if p.type in ("str", "date", "datetime") and not p.values:
                constraints["max_length"] = MAX_STR
            if p.type in ("int", "float"):
                constraints["ge"] = p.min if p.min is not None else -SQLITE_INT_MAX
                constraints["le"] = p.max if p.max is not None else SQLITE_INT_MAX
            if p.type == "float":
                constraints["allow_inf_nan"] = False
            if p.type == "date":
                constraints["pattern"] = r"^\d{4}-\d{2}-\d{2}$"
            if p.required:
                fields[p.name] = (typ, Field(..., **constraints))
            else:
                fields[p.name] = (Optional[typ], Field(None, **constraints))
        return create_model(f"{self.name}_args", __config__=ConfigDict(extra="forbid"), **fields)


@dataclass
class Domain:
    """A compiled domain: its spec, its tools by name, and entity lookups."""

    spec: DomainSpec
    tools: dict[str, Tool] = dc_field(default_factory=dict)
    source: str | None = None
    """The spec file a custom domain was loaded from (None for built-ins and in-memory specs): environment and task
    records carry it, so every later command finds the domain without being told."""

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def entities(self) -> dict[str, EntitySpec]:
        return {e.name: e for e in self.spec.entities}

    def field_type(self, entity: str, name: str) -> str:
        if name == "id":
            return "int"
        return next(f.type for f in self.entities[entity].fields if f.name == name)

    def entity_order(self) -> list[str]:
        """Entities in reference order (a table's references come before it)."""
        done: list[str] = []
        pending = list(self.entities)
        while pending:
            for name in pending:
                refs = {f.ref for f in self.entities[name].fields if f.type == "ref"}
                if refs <= set(done):
                    done.append(name)
                    pending.remove(name)
                    break
        return done
