"""Tool chains: plan one backwards from a target tool over the ToolGraph, then execute it with concrete values.

Planning picks, for every parameter that needs a producer, a tool that outputs its semantic type (reusing
an earlier step when possible, so values stay consistent, and preferring rarely used tools). Execution fills
user-knowable parameters from real database rows, everything else from earlier steps' results, and records
where every value came from so a task's text can describe the rows without naming internal ids.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from toolgym.domains.database import ValueSampler
from toolgym.domains.execute import ToolError
from toolgym.domains.model import Domain, Param, Tool
from toolgym.envs.graph import UNREACHABLE, ToolGraph


@dataclass
class Step:
    tool: str
    sources: dict[str, int] = field(default_factory=dict)


@dataclass
class ChainPlan:
    steps: list[Step]

    @property
    def tools(self) -> list[str]:
        return [s.tool for s in self.steps]

    @property
    def target(self) -> str:
        return self.steps[-1].tool


class ChainFailed(Exception):
    """A concrete execution of a plan failed (a precondition did not hold, a list came back empty...)."""


KIND_WEIGHT = {"find": 1.5, "list": 1.5, "get": 1.0, "action": 0.7, "search": 0.25}


def plan_chain(graph: ToolGraph, target: str, rng: random.Random, usage: Counter | None = None,
               reuse_p: float = 0.9, max_depth: int = 3) -> ChainPlan:
    """Resolve `target`'s dependencies backwards into an ordered plan (dependencies first, target last).

    Only read-only tools produce values (every write in a chain is a target the task text states).
    Producers are drawn by kind (lookups by a user-knowable key over broad searches) and rarity of use,
    within a depth budget that shrinks at every level, so planning always terminates.
    """
    if graph.depth.get(target, UNREACHABLE) >= UNREACHABLE:
        raise ValueError(f"tool '{target}' cannot be reached from user-knowable inputs in this graph")
    usage = usage if usage is not None else Counter()
    steps: list[Step] = []
    produced: dict[str, list[int]] = defaultdict(list)
    stack: list[str] = []

    def resolve(name: str, budget: int) -> int:
        stack.append(name)
        sources: dict[str, int] = {}
        for p in graph.tools[name].params:
            if not p.needs_producer:
                continue
            existing = produced.get(p.semantic)
            if existing and rng.random() < reuse_p:
                sources[p.name] = existing[-1]
                continue
            options = [t for t in graph.read_producers(p.semantic) if graph.depth[t] < budget]
            options = [t for t in options if t not in stack] or options
            weights = [KIND_WEIGHT.get(graph.tools[t].kind, 1.0) * 0.5 ** graph.depth[t] / (1 + usage[t])
                       for t in options]
            sources[p.name] = resolve(rng.choices(options, weights=weights)[0], budget - 1)
        stack.pop()
        steps.append(Step(name, sources))
        index = len(steps) - 1
        for semantic in graph.tools[name].outputs:
            produced[semantic].append(index)
        return index

    resolve(target, max(max_depth, graph.depth[target]))
    return ChainPlan(steps)


OriginKind = Literal["row", "step", "free"]


@dataclass
class Origin:
    """Where an argument's value came from: a database row the user knows, an earlier step's result, or free."""

    kind: OriginKind
    entity: str | None = None
    field: str | None = None
    row_id: int | None = None
    step: int | None = None
    item: int | None = None


@dataclass
class ExecutedStep:
    tool: str
    args: dict[str, Any]
    result: Any
    origins: dict[str, Origin]

    def row(self, item: int | None) -> Any:
        return self.result["items"][item] if item is not None else self.result


def carrier_field(domain: Domain, tool: Tool, semantic: str) -> str | None:
    """The key in `tool`'s result row that carries `semantic` ("entity.field"), if any."""
    if tool.kind == "action":
        return next((k for k, s in tool.return_types.items() if s == semantic), None)
    entity, _, fld = semantic.partition(".")
    if entity == tool.entity:
        return fld
    if fld != "id":
        return None
    return next((f.name for f in domain.entities[tool.entity].fields if f.type == "ref" and f.ref == entity), None)


class ChainExecutor:
    """Executes plans on an environment's connection with seeded concrete values."""

    def __init__(self, domain: Domain, call, rows, rng: random.Random, memory: dict[str, int] | None = None,
                 stick_p: float = 0.8):
        self.domain = domain
        self.call = call
        self.rows = rows
        self.rng = rng
        self.memory = memory if memory is not None else {}
        self.stick_p = stick_p
        self.values = ValueSampler(rng, datetime.fromisoformat(domain.spec.clock))

    def _free_value(self, p: Param) -> Any:
        if p.gen is None and p.values:
            return self.rng.choice(p.values)
        value = self.values.draw(p.gen, p.type, p.values)
        if p.type == "int":
            value = int(value)
            value = max(value, int(p.min)) if p.min is not None else value
            value = min(value, int(p.max)) if p.max is not None else value
        return value

    def _pick_row(self, entity: str) -> dict[str, Any]:
        """A random row, or (usually) the row of this entity the task already talks about."""
        remembered = self.memory.get(entity)
        if remembered is not None and self.rng.random() < self.stick_p:
            row = self.rows(entity, self.rng, remembered)
            if row is not None:
                return row
        row = self.rows(entity, self.rng)
        self.memory.setdefault(entity, row["id"])
        return row

    def _knowable_args(self, tool: Tool, args: dict[str, Any], origins: dict[str, Origin]) -> None:
        """Fill knowable parameters: identifying ones from a real row, new values freshly drawn."""
        picked: dict[str, dict[str, Any]] = {}
        params = [p for p in tool.params if not p.needs_producer and p.name not in args]
        if tool.kind == "search":
            candidates = [p for p in params if p.semantic and p.knowable and p.name not in ("limit", "offset")]
            named = [p for p in candidates if p.type == "str" and not p.values]
            params = named[:1] or self.rng.sample(candidates, min(1, len(candidates)))
        for p in params:
            if not p.required and tool.kind != "search":
                continue
            if tool.kind in ("create", "update") or not p.semantic:
                args[p.name] = self._free_value(p)
                origins[p.name] = Origin("free")
                continue
            entity, _, fld = p.semantic.partition(".")
            if entity not in picked:
                picked[entity] = self._pick_row(entity)
            row = picked[entity]
            args[p.name] = row[fld]
            origins[p.name] = Origin("row", entity, fld, row["id"])

    def run(self, plan: ChainPlan) -> list[ExecutedStep]:
        done: list[ExecutedStep] = []
        taken: dict[tuple[int, str], set[int]] = defaultdict(set)
        for step in plan.steps:
            tool = self.domain.tools[step.tool]
            args: dict[str, Any] = {}
            origins: dict[str, Origin] = {}
            for pname, src in step.sources.items():
                semantic = tool.param(pname).semantic
                source = done[src]
                src_tool = self.domain.tools[source.tool]
                item = None
                key = carrier_field(self.domain, src_tool, semantic)
                if key is None:
                    raise ChainFailed(f"{source.tool} gives no {semantic}")
                if src_tool.returns_list:
                    items = source.result["items"]
                    free = [i for i, it in enumerate(items) if i not in taken[(src, semantic)] and it.get(key) is not None]
                    if not free:
                        raise ChainFailed(f"{source.tool} returned no usable {semantic}")
                    item = self.rng.choice(free)
                    taken[(src, semantic)].add(item)
                value = source.row(item).get(key)
                if value is None:
                    raise ChainFailed(f"{source.tool} gave no {semantic}")
                args[pname] = value
                origins[pname] = Origin("step", semantic.split(".")[0], key, step=src, item=item)
            self._knowable_args(tool, args, origins)
            try:
                result = self.call(tool.name, args)
            except ToolError as exc:
                raise ChainFailed(f"{tool.name}: {exc}") from None
            done.append(ExecutedStep(tool.name, args, result, origins))
        return done
