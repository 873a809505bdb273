"""Declarative domain specs (YAML on disk): entities, their fields and state machines, and declared actions.

A spec says *what* a business domain is; `compile.py` turns it into SQLite tables and executable tools.
Expressions inside actions are plain data (no code): a literal, "$param", "$alias.field", "$now", or
{"add"|"sub"|"mul"|"div"|"min"|"max"|"concat": [expr, ...]}.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FieldType = Literal["int", "float", "str", "bool", "date", "datetime", "enum", "ref"]
ParamType = Literal["int", "float", "str", "bool", "date", "datetime", "enum"]
CompareOp = Literal["eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in"]
Expr = Any
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Bound = Annotated[float, Field(allow_inf_nan=False)]
MAX_ROWS = 100_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Generator(_Strict):
    """How seeded data (and task values) fill a field.

    kinds: faker (provider = a Faker method name, e.g. "name", "phone_number"), int/float (min..max),
    choice (values, optional weights), pattern ("#" digit, "?" upper-case letter, other chars literal),
    date/datetime (min..max days from the domain clock), bool (p = probability of true),
    words (n words from `values`).
    """

    kind: Literal["faker", "int", "float", "choice", "pattern", "date", "datetime", "bool", "words"]
    provider: str | None = None
    min: Bound | None = None
    max: Bound | None = None
    values: list[Any] | None = None
    weights: list[Weight] | None = None
    pattern: str | None = None
    decimals: int = Field(2, ge=0, le=12)
    p: float = Field(0.5, ge=0, le=1)
    n: int = Field(2, ge=1)


class FieldSpec(_Strict):
    """A column. `knowable` marks values a user can state (a phone number, a name): tools taking them need no producer."""

    name: str
    type: FieldType
    description: str = ""
    ref: str | None = None
    values: list[str] | None = None
    unique: bool = False
    knowable: bool = False
    updatable: bool = False
    searchable: bool = False
    nullable: bool = False
    gen: Generator | None = None


class Transition(_Strict):
    """A status change, compiled into a tool named `<name>_<entity>` (e.g. cancel_order)."""

    name: str
    from_: list[str] = Field(alias="from", min_length=1)
    to: str
    description: str = ""
    intent: str | None = None


class StatusSpec(_Strict):
    field: str = "status"
    states: list[str]
    initial: str
    transitions: list[Transition] = []
    seed_weights: dict[str, Weight] | None = None


class EntitySpec(_Strict):
    """A table with an implicit integer primary key `id`."""

    name: str
    plural: str | None = None
    description: str = ""
    label: str | None = None
    persona: bool = False
    fields: list[FieldSpec]
    status: StatusSpec | None = None
    rows: int = Field(200, ge=1, le=MAX_ROWS)
    creatable: bool = True
    intents: dict[str, str] = {}

    @property
    def plural_name(self) -> str:
        return self.plural or (self.name[:-1] + "ies" if self.name.endswith("y") else self.name + "s")


class ParamSpec(_Strict):
    """A declared action's parameter. `ref: entity.field` types it for the tool graph (and task values)."""

    name: str
    type: ParamType = "int"
    description: str = ""
    ref: str | None = None
    required: bool = True
    values: list[str] | None = None
    min: Bound | None = None
    max: Bound | None = None
    gen: Generator | None = None


class LoadSpec(_Strict):
    """Bind a row to an alias before checks run: by id (`id`) or by a unique field (`by` + `value`)."""

    as_: str = Field(alias="as")
    entity: str
    id: Expr = None
    by: str | None = None
    value: Expr = None


class Condition(_Strict):
    left: Expr
    op: CompareOp
    right: Expr
    message: str


class Effect(_Strict):
    """One write: `insert: entity` with `values`, or `update: entity` with `id` and `set`."""

    insert: str | None = None
    update: str | None = None
    id: Expr = None
    values: dict[str, Expr] = {}
    set: dict[str, Expr] = {}
    as_: str | None = Field(default=None, alias="as")


class ActionSpec(_Strict):
    """A declared tool: parameters, rows to load, preconditions, effects and a returned record."""

    name: str
    description: str
    params: list[ParamSpec] = []
    load: list[LoadSpec] = []
    require: list[Condition] = []
    effects: list[Effect] = []
    returns: dict[str, Expr] = {}
    intent: str


class DomainSpec(_Strict):
    """A whole business domain as its YAML file states it: entities, declared actions and the domain's clock."""

    name: str
    title: str
    description: str
    clock: str = "2025-06-01T12:00:00"
    entities: list[EntitySpec]
    actions: list[ActionSpec] = []

    @field_validator("clock")
    @classmethod
    def _clock_is_a_datetime(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"'{value}' is not an ISO date-time such as 2025-06-01T12:00:00") from None
        return value
