"""Capability tiers of synthesized tasks, the report's curriculum axis: `basic` is single-call tool invocation (one
lookup answered from its result, or one write whose every argument the user states); `multi` chains a lookup into
the call that needs its output (exactly two calls)."""

from __future__ import annotations

from typing import Literal

from toolgym.envs.environment import Environment
from toolgym.tasks.model import Task
from toolgym.tasks.synthesize import SynthesisConfig, SynthesisFailed, synthesize_task

Tier = Literal["basic", "multi"]
TIERS: dict[str, tuple[SynthesisConfig, int]] = {
    "basic": (SynthesisConfig(target_counts=(1,), target_weights=(1.0,), max_calls_per_target=1, lookups=True), 1),
    "multi": (SynthesisConfig(target_counts=(1,), target_weights=(1.0,), max_calls_per_target=2), 2),
}
"""Tier -> (synthesis settings, exact number of calls of the gold chain)."""


def tier_tasks(env: Environment, tier: Tier, n: int, seed: int, attempts: int = 3) -> list[Task]:
    """Up to `n` tasks of `tier` in `env` with distinct instructions, ids `{env}-{tier}{j}`; deterministic in `seed`.

    Seeds whose synthesis fails, or gives a chain of another length or a repeated instruction, are skipped, trying
    at most `attempts * n` seeds."""
    config, calls = TIERS[tier]
    found: dict[str, Task] = {}
    for j in range(attempts * n):
        if len(found) == n:
            break
        try:
            task = synthesize_task(env, seed * 1000 + j, config)
        except SynthesisFailed:
            continue
        if len(task.gold_chain) == calls and task.instruction not in found:
            found[task.instruction] = task.model_copy(update={"id": f"{env.id}-{tier}{len(found)}"})
    return list(found.values())
