"""Spec -> Domain: validate everything first (every problem with its YAML path), then build tools.

A broken spec never half-compiles: `compile_spec` either returns a whole Domain or raises SpecError
listing all problems found.
"""

from __future__ import annotations

import math
import random
import re
import string
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from toolgym.domains.database import ValueSampler
from toolgym.domains.derive import derive_tools, row_outputs
from toolgym.domains.model import SQLITE_INT_MAX, Domain, Param, Tool
from toolgym.domains.spec import ActionSpec, DomainSpec, EntitySpec, FieldSpec, Generator

IDENT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
ENUM_VALUE = re.compile(r"^[A-Za-z0-9_ .\-]{1,64}$")
OPS = {"add", "sub", "mul", "div", "min", "max", "concat", "round"}
MAX_TOOL_NAME = 64
"""Longest tool name OpenAI-style function calling accepts."""
SAMPLE_DRAWS = 8
"""Values drawn from each generator at validation, to prove the column can store what it makes."""
UNIQUE_HEADROOM = 2
"""A unique field needs this many times more possible values than seeded rows: rows draw values at random."""


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """Raised with every problem of a spec; nothing is compiled."""

    def __init__(self, source: str, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


def _storage_problem(value: Any, typ: str, values: list[str] | None, nullable: bool) -> str | None:
    """Why a column of type `typ` cannot hold `value` as meant (None when it can)."""
    if value is None:
        return None if nullable else "makes null, but the field is not nullable"
    if typ == "int":
        try:
            number = int(value)
        except (TypeError, ValueError, OverflowError):
            return f"makes {value!r}, which is not an integer"
        return None if abs(number) <= SQLITE_INT_MAX else f"makes {number}, beyond SQLite's integer range"
    if typ == "float" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        return f"makes {value!r}, which is not a finite number"
    if typ == "bool" and value not in (True, False):
        return f"makes {value!r}, which is not a boolean"
    if typ in ("date", "datetime"):
        try:
            (date if typ == "date" else datetime).fromisoformat(value)
        except (TypeError, ValueError):
            return f"makes {value!r}, which is not an ISO {typ}"
    if values and str(value) not in values:
        return f"makes {value!r}, which is not one of the values {values}"
    return None


def _distinct_values(gen: Generator | None, f: FieldSpec, rows: dict[str, int]) -> int | None:
    """How many distinct values seeding can give field `f` (None when unbounded or unknown, e.g. Faker)."""
    if f.type == "ref":
        return rows.get(f.ref or "")
    if f.type == "bool":
        return 2
    if gen is None:  # the defaults of database.ValueSampler: enum values, ints 1..100, dates of the last year
        return len(set(f.values)) if f.values else {"int": 100, "date": 366}.get(f.type)
    if gen.kind == "choice":
        return len({str(v) for v in gen.values or []})
    if gen.kind == "bool":
        return 2
    if gen.kind == "int" and gen.min is not None and gen.max is not None:
        return max(0, math.floor(gen.max) - math.ceil(gen.min) + 1)
    if gen.kind == "date":
        lo, hi = gen.min if gen.min is not None else -365, gen.max if gen.max is not None else 0
        return int(hi - lo) + 1
    if gen.kind == "pattern" and gen.pattern:
        return 10 ** gen.pattern.count("#") * 26 ** gen.pattern.count("?")
    if gen.kind == "words" and gen.values:
        return math.perm(len(set(gen.values)), min(gen.n, len(gen.values)))
    return None


def _literal(expr: Any) -> bool:
    """Whether an action expression is a constant (not $param, $alias.field, $now or an operation)."""
    return not isinstance(expr, (dict, list)) and not (isinstance(expr, str) and expr.startswith("$"))


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


@lru_cache(maxsize=1)
def _faker_providers() -> frozenset[str]:
    from faker import Faker

    fake = Faker("en_US")
    return frozenset(n for provider in fake.get_providers() for n in dir(provider)
                     if not n.startswith("_") and callable(getattr(provider, n)))


class _Checker:
    def __init__(self, spec: DomainSpec):
        self.spec = spec
        self.problems: list[Problem] = []
        self.entities = {e.name: e for e in spec.entities}

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def fields_of(self, entity: str) -> set[str]:
        e = self.entities[entity]
        names = {f.name for f in e.fields} | {"id"}
        if e.status:
            names.add(e.status.field)
        return names

    def allowed_values(self, entity: str) -> dict[str, list[str]]:
        """The closed value sets of an entity's columns: enum values and the status states."""
        e = self.entities[entity]
        allowed = {f.name: f.values for f in e.fields if f.type == "enum" and f.values}
        if e.status:
            allowed[e.status.field] = e.status.states
        return allowed

    def check_ident(self, path: str, name: str) -> None:
        if not IDENT.match(name):
            self.add(path, f"'{name}' is not a lower_snake_case identifier")

    def check_generator(self, path: str, gen: Generator, values: list[str] | None) -> None:
        if gen.kind == "faker" and (not gen.provider or gen.provider not in _faker_providers()):
            self.add(f"{path}.provider", f"unknown Faker provider '{gen.provider}'")
        if gen.kind in ("choice", "words") and not gen.values:
            self.add(f"{path}.values", f"a '{gen.kind}' generator needs values")
        if gen.kind == "choice" and gen.weights and len(gen.weights) != len(gen.values or []):
            self.add(f"{path}.weights", "weights and values differ in length")
        if gen.kind == "choice" and gen.weights is not None and sum(gen.weights) <= 0:
            self.add(f"{path}.weights", "weights must sum to more than zero")
        if gen.kind == "pattern" and not gen.pattern:
            self.add(f"{path}.pattern", "a 'pattern' generator needs a pattern")
        if gen.kind in ("int", "float") and (gen.min is None or gen.max is None or gen.min > gen.max):
            self.add(path, f"a '{gen.kind}' generator needs min <= max")
        if values and gen.kind == "choice" and set(map(str, gen.values or [])) - set(values):
            self.add(f"{path}.values", "generator values are not among the field's enum values")

    def check_draws(self, path: str, gen: Generator, typ: str, values: list[str] | None, nullable: bool) -> None:
        """Check a `typ` column can hold whatever the generator makes: its range ends, every choice, and a few
        seeded draws of the rest (catches failing Faker providers, dates off the calendar, text for numbers)."""
        before = len(self.problems)
        self.check_generator(path, gen, values)
        if len(self.problems) > before:
            return
        clock = datetime.fromisoformat(self.spec.clock)
        if gen.kind in ("date", "datetime"):
            try:
                ends = [clock + timedelta(days=d) for d in (gen.min, gen.max) if d is not None]
            except OverflowError:
                ends = None
            if ends is None or any(not 1 <= end.year <= 9998 for end in ends):
                self.add(path, "the date range reaches beyond the calendar (years 1-9998) from the domain clock")
                return
        if gen.kind == "choice":
            made = list(gen.values or [])
        elif gen.kind == "int":
            made = [math.ceil(gen.min), math.floor(gen.max)]
        else:
            sampler = ValueSampler(random.Random(0), clock)
            try:
                made = [sampler.draw(gen, typ, values) for _ in range(SAMPLE_DRAWS)]
            except Exception as exc:  # a Faker provider can fail in any way; the spec author must hear why
                self.add(path, f"the generator fails: {type(exc).__name__}: {exc}")
                return
        for value in made:
            problem = _storage_problem(value, typ, values, nullable)
            if problem:
                self.add(path, f"the generator {problem}, but the field is {typ}")
                return

    def check_unique(self, path: str, f: FieldSpec, entity: EntitySpec) -> None:
        """A unique non-text field must offer enough distinct values for every seeded row (seeding makes a
        repeated text value unique with a suffix; other types have no such way out)."""
        if f.type == "str":
            return
        rows = {e.name: e.rows for e in self.spec.entities}
        distinct = _distinct_values(f.gen, f, rows)
        if distinct is not None and distinct < UNIQUE_HEADROOM * entity.rows:
            self.add(path, f"unique field '{f.name}' can take only {distinct} distinct values, but {entity.name} "
                           f"seeds {entity.rows} rows (give it at least {UNIQUE_HEADROOM}x as many values as rows, "
                           "or fewer rows)")

    def check_entities(self) -> None:
        seen: set[str] = set()
        for i, e in enumerate(self.spec.entities):
            p = f"entities[{i}]"
            self.check_ident(f"{p}.name", e.name)
            if e.name.startswith("sqlite_"):
                self.add(f"{p}.name", "names starting with 'sqlite_' are reserved by SQLite")
            if e.name in seen:
                self.add(f"{p}.name", f"duplicate entity '{e.name}'")
            seen.add(e.name)
            names: set[str] = {"id"}
            for j, f in enumerate(e.fields):
                fp = f"{p}.fields[{j}]"
                self.check_ident(f"{fp}.name", f.name)
                if f.name in names:
                    self.add(f"{fp}.name", f"duplicate or reserved field '{f.name}'")
                names.add(f.name)
                if f.type == "ref":
                    if f.ref == e.name:
                        self.add(f"{fp}.ref", "self references are not supported")
                    elif f.ref not in self.entities:
                        self.add(f"{fp}.ref", f"unknown entity '{f.ref}'")
                    if not f.name.endswith("_id"):
                        self.add(f"{fp}.name", "a reference field's name must end in '_id'")
                elif f.ref is not None:
                    self.add(f"{fp}.ref", "only fields of type 'ref' take a ref")
                if f.type == "enum":
                    if not f.values:
                        self.add(f"{fp}.values", "an enum field needs values")
                    for v in f.values or []:
                        if not ENUM_VALUE.match(v):
                            self.add(f"{fp}.values", f"enum value '{v}' has characters outside [A-Za-z0-9_ .-]")
                if f.gen:
                    self.check_draws(f"{fp}.gen", f.gen, f.type, f.values, f.nullable)
                if f.unique:
                    self.check_unique(fp, f, e)
            if e.label and e.label not in names:
                self.add(f"{p}.label", f"unknown field '{e.label}'")
            if e.status:
                st, sp = e.status, f"{p}.status"
                self.check_ident(f"{sp}.field", st.field)
                if st.field in names:
                    self.add(f"{sp}.field", f"status field '{st.field}' clashes with a declared field")
                if st.initial not in st.states:
                    self.add(f"{sp}.initial", f"'{st.initial}' is not a state")
                for v in st.states:
                    if not ENUM_VALUE.match(v):
                        self.add(f"{sp}.states", f"state '{v}' has characters outside [A-Za-z0-9_ .-]")
                for k in st.seed_weights or {}:
                    if k not in st.states:
                        self.add(f"{sp}.seed_weights.{k}", f"'{k}' is not a state")
                if st.seed_weights is not None and sum(st.seed_weights.get(s, 0.0) for s in st.states) <= 0:
                    self.add(f"{sp}.seed_weights", "the weights of the states must sum to more than zero")
                for k, t in enumerate(st.transitions):
                    tp = f"{sp}.transitions[{k}]"
                    self.check_ident(f"{tp}.name", t.name)
                    for s in [*t.from_, t.to]:
                        if s not in st.states:
                            self.add(tp, f"'{s}' is not a state of {e.name}")
        self.check_cycles()

    def check_cycles(self) -> None:
        import networkx as nx

        g = nx.DiGraph()
        for e in self.spec.entities:
            g.add_node(e.name)
            for f in e.fields:
                if f.type == "ref" and f.ref in self.entities and f.ref != e.name:
                    g.add_edge(e.name, f.ref)
        for cycle in nx.simple_cycles(g):
            self.add("entities", f"reference cycle {' -> '.join([*cycle, cycle[0]])}; seeded data needs an order")

    def check_expr(self, path: str, expr: Any, params: set[str], aliases: dict[str, str]) -> None:
        if isinstance(expr, dict):
            if len(expr) != 1 or next(iter(expr)) not in OPS:
                self.add(path, f"an operation is one key of {sorted(OPS)}")
                return
            op, args = next(iter(expr.items()))
            if not isinstance(args, list) or not args:
                self.add(f"{path}.{op}", "an operation takes a non-empty list")
                return
            for i, a in enumerate(args):
                self.check_expr(f"{path}.{op}[{i}]", a, params, aliases)
        elif isinstance(expr, str) and expr.startswith("$"):
            parts = expr[1:].split(".")
            if parts == ["now"]:
                return
            if len(parts) == 1:
                if parts[0] not in params:
                    self.add(path, f"unknown parameter '{parts[0]}'")
            elif len(parts) == 2:
                alias, fld = parts
                if alias not in aliases:
                    self.add(path, f"unknown alias '{alias}' (load or insert it first)")
                elif fld not in self.fields_of(aliases[alias]):
                    self.add(path, f"entity {aliases[alias]} has no field '{fld}'")
            else:
                self.add(path, f"'{expr}' is neither $param nor $alias.field")
        elif isinstance(expr, list):
            for i, a in enumerate(expr):
                self.check_expr(f"{path}[{i}]", a, params, aliases)

    def check_action(self, i: int, a: ActionSpec) -> None:
        p = f"actions[{i}]"
        self.check_ident(f"{p}.name", a.name)
        params: set[str] = set()
        for j, prm in enumerate(a.params):
            pp = f"{p}.params[{j}]"
            self.check_ident(f"{pp}.name", prm.name)
            params.add(prm.name)
            if prm.ref:
                ent, _, fld = prm.ref.partition(".")
                if ent not in self.entities:
                    self.add(f"{pp}.ref", f"unknown entity '{ent}'")
                elif fld not in self.fields_of(ent):
                    self.add(f"{pp}.ref", f"entity {ent} has no field '{fld}'")
            if prm.type == "enum" and not prm.values:
                self.add(f"{pp}.values", "an enum parameter needs values")
            if prm.gen:
                self.check_draws(f"{pp}.gen", prm.gen, prm.type, prm.values, not prm.required)
        aliases: dict[str, str] = {}
        for j, ld in enumerate(a.load):
            lp = f"{p}.load[{j}]"
            if ld.entity not in self.entities:
                self.add(f"{lp}.entity", f"unknown entity '{ld.entity}'")
                continue
            if ld.by is not None:
                if ld.by not in self.fields_of(ld.entity):
                    self.add(f"{lp}.by", f"entity {ld.entity} has no field '{ld.by}'")
                self.check_expr(f"{lp}.value", ld.value, params, aliases)
            elif ld.id is None:
                self.add(lp, "a load needs `id` or `by` + `value`")
            else:
                self.check_expr(f"{lp}.id", ld.id, params, aliases)
            aliases[ld.as_] = ld.entity
        for j, c in enumerate(a.require):
            self.check_expr(f"{p}.require[{j}].left", c.left, params, aliases)
            self.check_expr(f"{p}.require[{j}].right", c.right, params, aliases)
        for j, eff in enumerate(a.effects):
            ep = f"{p}.effects[{j}]"
            target = eff.insert or eff.update
            if bool(eff.insert) == bool(eff.update):
                self.add(ep, "an effect is exactly one of insert or update")
                continue
            if target not in self.entities:
                self.add(ep, f"unknown entity '{target}'")
                continue
            known = self.fields_of(target)
            written = eff.values if eff.insert else eff.set
            if eff.insert and eff.set or eff.update and eff.values:
                self.add(ep, "insert takes `values`, update takes `set`")
            allowed = self.allowed_values(target)
            for k, v in written.items():
                vp = f"{ep}.{'values' if eff.insert else 'set'}.{k}"
                if k not in known or k == "id":
                    self.add(vp, f"entity {target} has no writable field '{k}'")
                elif k in allowed and _literal(v) and str(v) not in allowed[k]:
                    self.add(vp, f"'{v}' is not one of {target}.{k}'s values {allowed[k]}")
                self.check_expr(vp, v, params, aliases)
            if eff.update:
                if eff.id is None:
                    self.add(f"{ep}.id", "an update needs the id of the row")
                self.check_expr(f"{ep}.id", eff.id, params, aliases)
            else:
                missing = [f.name for f in self.entities[target].fields if not f.nullable and f.name not in written]
                if missing:
                    self.add(f"{ep}.values", f"insert into {target} misses required fields {missing}")
                if eff.as_:
                    aliases[eff.as_] = target
        for k, v in a.returns.items():
            self.check_expr(f"{p}.returns.{k}", v, params, aliases)
        self.check_intent(f"{p}.intent", a.intent, params)

    def check_intent(self, path: str, intent: str, params: set[str]) -> None:
        try:
            fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(intent)
                      if name is not None]
        except ValueError as exc:
            self.add(path, f"bad template: {exc}")
            return
        for name, spec, conv in fields:
            if not name:
                self.add(path, "template placeholders name a parameter: {name}, not {}")
            elif name not in params:
                self.add(path, f"template names unknown parameter '{name}'")
            if spec or conv:
                self.add(path, f"placeholder {{{name}}} takes no format spec or conversion")


def _action_tool(domain_entities: dict[str, EntitySpec], a: ActionSpec) -> Tool:
    """Compile a declared action: param semantics from refs, output semantics inferred from returns."""
    knowable_fields = {f"{e.name}.{f.name}" for e in domain_entities.values() for f in e.fields if f.knowable}
    params = []
    for p in a.params:
        knowable = p.ref is None or p.ref in knowable_fields
        params.append(Param(p.name, p.type, p.description, p.ref, p.required, knowable,
                            tuple(p.values) if p.values else None, p.min, p.max, p.gen))
    aliases = {ld.as_: ld.entity for ld in a.load} | {e.as_: e.insert for e in a.effects if e.as_ and e.insert}
    ref_semantic = {p.name: p.ref for p in a.params if p.ref}
    return_types: dict[str, str] = {}
    for key, expr in a.returns.items():
        if not (isinstance(expr, str) and expr.startswith("$")):
            continue
        parts = expr[1:].split(".")
        if len(parts) == 1 and parts[0] in ref_semantic:
            return_types[key] = ref_semantic[parts[0]]
        elif len(parts) == 2 and parts[0] in aliases:
            ent = domain_entities[aliases[parts[0]]]
            f = next((f for f in ent.fields if f.name == parts[1]), None)
            return_types[key] = f"{f.ref}.id" if f is not None and f.type == "ref" else f"{ent.name}.{parts[1]}"
    return Tool(a.name, "action", a.description, tuple(params), frozenset(return_types.values()), a.intent,
                action=a, writes=bool(a.effects), return_types=return_types)


def _produced(tools: dict[str, Tool], names: set[str]) -> set[str]:
    return set().union(*(tools[n].outputs for n in names if not tools[n].writes)) if names else set()


def _reachable(tools: dict[str, Tool]) -> set[str]:
    """Tools whose inputs can all be obtained from user-knowable values through read-only tools."""
    reachable: set[str] = set()
    while True:
        produced = _produced(tools, reachable)
        new = {t.name for t in tools.values() if t.name not in reachable
               and all(p.semantic in produced for p in t.params if p.needs_producer)}
        if not new:
            return reachable
        reachable |= new


def compile_spec(raw: dict[str, Any] | DomainSpec, source: str = "<spec>") -> Domain:
    """Validate a spec (dict from YAML or DomainSpec) and compile it, or raise SpecError with every problem."""
    if isinstance(raw, DomainSpec):
        spec = raw
    else:
        try:
            spec = DomainSpec.model_validate(raw)
        except ValidationError as exc:
            raise SpecError(source, [Problem(_loc(e["loc"]), e["msg"]) for e in exc.errors()]) from None
    checker = _Checker(spec)
    checker.check_ident("name", spec.name)
    checker.check_entities()
    for i, a in enumerate(spec.actions):
        checker.check_action(i, a)
    if checker.problems:
        raise SpecError(source, checker.problems)

    tools: dict[str, Tool] = {}
    paths: dict[str, str] = {}
    for i, e in enumerate(spec.entities):
        for t in derive_tools(e):
            path = f"entities[{i}]"
            if t.transition is not None:
                k = next(k for k, tr in enumerate(e.status.transitions) if tr is t.transition)
                path += f".status.transitions[{k}].name"
            if t.name in tools:
                checker.add(path, f"generated tool '{t.name}' clashes with the tool of the same name from "
                                  f"{paths[t.name]}")
                continue
            tools[t.name], paths[t.name] = t, path
        for k, intent in e.intents.items():
            if k not in tools:
                checker.add(f"entities[{i}].intents.{k}", f"no derived tool named '{k}'")
    for i, a in enumerate(spec.actions):
        if a.name in tools:
            checker.add(f"actions[{i}].name", f"tool '{a.name}' already exists (from {paths[a.name]})")
            continue
        tools[a.name], paths[a.name] = _action_tool(checker.entities, a), f"actions[{i}]"
    for t in tools.values():
        if len(t.name) > MAX_TOOL_NAME:
            checker.add(paths[t.name], f"tool name '{t.name}' is longer than the {MAX_TOOL_NAME} characters "
                                       "function-calling APIs accept; shorten the entity, field or action name")
        names = [p.name for p in t.params]
        for twice in sorted({n for n in names if names.count(n) > 1}):
            checker.add(paths[t.name], f"tool '{t.name}' would take parameter '{twice}' twice; rename the field")
    if checker.problems:
        raise SpecError(source, checker.problems)
    reachable = _reachable(tools)
    for t in tools.values():
        if t.name not in reachable:
            missing = sorted({p.semantic for p in t.params if p.needs_producer} - _produced(tools, reachable))
            checker.add(paths[t.name], f"unreachable tool '{t.name}': no read-only chain from user-knowable "
                                       f"inputs yields {', '.join(missing)}")
    for t in tools.values():
        if t.kind != "action":
            checker.check_intent(f"{paths[t.name]}.intents.{t.name}", t.intent, {p.name for p in t.params})
    if checker.problems:
        raise SpecError(source, checker.problems)
    return Domain(spec=spec, tools=tools)


def load_spec_file(path: str | Path) -> Domain:
    """Read a YAML spec from disk and compile it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"<yaml> line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "<yaml>"
        message = str(exc).replace('"<unicode string>"', f'"{path}"')
        raise SpecError(str(path), [Problem(where, "not valid YAML\n" + message)]) from None
    if not isinstance(raw, dict):
        raise SpecError(str(path), [Problem("<root>", "a domain spec is a mapping")])
    return compile_spec(raw, source=str(path))


__all__ = ["Problem", "SpecError", "compile_spec", "load_spec_file", "row_outputs"]
