"""Deliberately wrong versions of a gold chain, for checking that verifiers catch real mistakes."""

from __future__ import annotations

from toolgym.domains.model import Domain
from toolgym.envs.environment import ToolCall
from toolgym.tasks.model import Task


def _last_write(task: Task, domain: Domain) -> int:
    writes = [i for i, c in enumerate(task.gold_chain) if domain.tools[c.name].writes]
    if not writes:
        raise ValueError(f"task {task.id} has no write to perturb")
    return writes[-1]


def drop_last_write(task: Task, domain: Domain) -> list[ToolCall]:
    """The gold chain without its last write."""
    i = _last_write(task, domain)
    return task.gold_chain[:i] + task.gold_chain[i + 1:]


def shift_write_id(task: Task, domain: Domain, row_count: int) -> list[ToolCall]:
    """The gold chain with the last write aimed at another row (its first id argument moved to the next id)."""
    i = _last_write(task, domain)
    call = task.gold_chain[i]
    key = next((k for k in call.arguments if k.endswith("_id")), None)
    if key is None:
        raise ValueError(f"{call.name} takes no id")
    args = dict(call.arguments)
    args[key] = args[key] % row_count + 1
    return [*task.gold_chain[:i], ToolCall(name=call.name, arguments=args), *task.gold_chain[i + 1:]]
