"""Task text from an executed chain: rows described the way a user knows them, intents filled from templates."""

from __future__ import annotations

import string
from typing import Any

from toolgym.domains.model import Domain
from toolgym.envs.chain import ExecutedStep, Origin


def fmt(value: Any) -> str:
    """A value as a user would say it."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    if value is None:
        return "none"
    return str(value).replace("_", " ") if isinstance(value, str) and value.isidentifier() else str(value)


def words(name: str) -> str:
    return name.replace("_", " ")


class ChainDescriber:
    """Describes rows reached by an executed chain without internal ids ("the order placed at ... of my account")."""

    def __init__(self, domain: Domain, steps: list[ExecutedStep]):
        self.domain = domain
        self.steps = steps

    def _is_persona(self, entity: str) -> bool:
        return self.domain.entities[entity].persona

    def _distinguishing(self, entity: str, row: dict[str, Any], items: list[dict[str, Any]]) -> tuple[str, Any]:
        """A field whose value picks `row` out of `items`: the entity label if unique there, else any unique field."""
        spec = self.domain.entities[entity]
        fields = ([spec.label] if spec.label else []) + [f.name for f in spec.fields if f.type not in ("ref", "bool")]
        for name in fields:
            if sum(1 for it in items if it.get(name) == row.get(name)) == 1:
                return name, row.get(name)
        return "id", row.get("id")

    def row(self, index: int, item: int | None, entity: str, via: str | None = None) -> str:
        """Noun phrase for the `entity` row carried by step `index` (list item `item`), through field `via`."""
        step = self.steps[index]
        tool = self.domain.tools[step.tool]
        if tool.kind == "action":
            return f"the {words(entity)} from that request"
        if entity != tool.entity:
            role = words((via or entity).removesuffix("_id"))
            return f"the {role} of {self.row(index, item, tool.entity)}"
        if tool.kind == "find":
            if self._is_persona(entity):
                return "my account"
            return f"the {words(entity)} with {words(tool.field)} {fmt(step.args[tool.field])}"
        if tool.kind in ("get", "update", "transition"):
            return self.origin(step.origins[f"{entity}_id"], step.args[f"{entity}_id"])
        if tool.kind == "create":
            return f"the new {words(entity)}"
        plural = self.domain.entities[entity].plural_name
        items = step.result["items"]
        name, value = self._distinguishing(entity, items[item], items)
        if tool.kind == "list":
            parent = self.origin(step.origins[tool.field], step.args[tool.field])
            group = f"the {words(plural)} of {parent}"
        else:
            filters = [f"{words(k)} {fmt(v)}" for k, v in step.args.items() if k not in ("limit", "offset")]
            group = f"the {words(plural)} with {' and '.join(filters)}" if filters else f"all {words(plural)}"
        if len(items) == 1:
            return f"the only one of {group}"
        return f"the {words(entity)} with {words(name)} {fmt(value)} among {group}"

    def origin(self, origin: Origin, value: Any) -> str:
        if origin.kind == "step":
            return self.row(origin.step, origin.item, origin.entity, origin.field)
        return fmt(value)

    def intent(self, step: ExecutedStep) -> str:
        tool = self.domain.tools[step.tool]
        names = {f for _, f, _, _ in string.Formatter().parse(tool.intent) if f}
        values = {n: self.origin(step.origins[n], step.args[n]) if n in step.origins else "" for n in names}
        return tool.intent.format(**values)
