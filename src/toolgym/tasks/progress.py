"""Gold-chain progress: how much of a task's gold chain an episode's tool calls reproduced.

A verdict is all or nothing, so a policy too weak to pass gets groups of equal zero rewards that carry no advantage.
Progress is the dense signal for that regime (a shaped reward, a metric that moves before pass rates do); it is
never a verdict, since a different valid path passes with little progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from toolgym.envs.environment import ToolCall


def _same_arguments(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal as the tools read them: the same keys, values equal as text (so 405 and "405" agree)."""
    return a.keys() == b.keys() and all(str(a[k]) == str(b[k]) for k in a)


def chain_progress(gold: Sequence[ToolCall], made: Sequence[ToolCall]) -> float:
    """Mean credit over the gold calls: 1 when some call made names the same tool with the same arguments, 0.5 when
    one names the same tool only, 0 otherwise. Each call made earns credit for one gold call at most, and exact
    matches are paired first, so a repeated call cannot be counted twice."""
    if not gold:
        raise ValueError("a task's gold chain is never empty; got an empty one")
    free = list(range(len(made)))
    credit = [0.0] * len(gold)
    for exact in (True, False):
        for g, want in enumerate(gold):
            if credit[g]:
                continue
            for i in free:
                if made[i].name == want.name and (not exact or _same_arguments(made[i].arguments, want.arguments)):
                    credit[g] = 1.0 if exact else 0.5
                    free.remove(i)
                    break
    return sum(credit) / len(gold)
