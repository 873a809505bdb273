"""Evaluation metrics: unbiased pass@k, tau2-bench pass^k, and per-domain aggregates of an evaluation run."""

from __future__ import annotations

from collections import defaultdict
from math import comb
from statistics import fmean

from pydantic import BaseModel, Field

from toolgym.agent.trajectory import Trajectory

OVERALL = "overall"


def _check_counts(n: int, c: int, k: int) -> None:
    """Reject counts for which the estimators are undefined, so a bad run fails loudly instead of skewing a mean."""
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (n, c, k)):
        raise ValueError(f"n, c, k must be integers, got n={n!r}, c={c!r}, k={k!r}")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k, 1 - C(n-c, k) / C(n, k): chance that at least one of k of the n trials passed."""
    _check_counts(n, c, k)
    return 1.0 - comb(n - c, k) / comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """tau2-bench pass^k, C(c, k) / C(n, k): chance that all of k of the n trials passed (reliability)."""
    _check_counts(n, c, k)
    return comb(c, k) / comb(n, k)


class GroupMetrics(BaseModel):
    """Metrics of a group of tasks (a domain or the whole run); pass rates are means over tasks, costs over trials."""

    n_tasks: int
    n_trials: int
    pass_at_1: float
    pass_at_k: float
    pass_hat_k: float
    pass_hat_curve: list[float] = Field(description="pass^j for j = 1..k, the reliability curve")
    avg_reward: float
    avg_progress: float = Field(description="mean share of the gold chain reproduced (moves before pass rates do)")
    avg_turns: float
    avg_tokens: float
    avg_tool_calls: float


def group_metrics(trajectories: list[Trajectory], k: int) -> GroupMetrics:
    """Aggregate trajectories grouped by (domain, task_id); every task uses its own trial count n."""
    if not trajectories:
        raise ValueError("cannot compute metrics of an empty group of trajectories")
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for t in trajectories:
        entry = counts[(t.domain, t.task_id)]
        entry[0] += 1
        entry[1] += int(t.passed)
    short = [task for task, (n, _) in counts.items() if n < k]
    if short:
        raise ValueError(f"k={k} but {len(short)} task(s) have fewer trials, e.g. {short[0][1]!r} ({short[0][0]})")
    curve = [fmean(pass_hat_k(n, c, j) for n, c in counts.values()) for j in range(1, k + 1)]
    return GroupMetrics(
        n_tasks=len(counts),
        n_trials=len(trajectories),
        pass_at_1=curve[0],
        pass_at_k=fmean(pass_at_k(n, c, k) for n, c in counts.values()),
        pass_hat_k=curve[-1],
        pass_hat_curve=curve,
        avg_reward=fmean(t.reward for t in trajectories),
        avg_progress=fmean(t.progress for t in trajectories),
        avg_turns=fmean(t.n_turns for t in trajectories),
        avg_tokens=fmean(t.n_tokens for t in trajectories),
        avg_tool_calls=fmean(t.n_tool_calls for t in trajectories),
    )


class EvalRun(BaseModel):
    """One evaluation condition (e.g. "clean", "noisy:all", "heavy@4"): a policy, k trials per task, and the episodes."""

    name: str
    policy: str
    k: int = Field(ge=1)
    trajectories: list[Trajectory] = Field(default_factory=list)

    def domains(self) -> list[str]:
        """Domains present in this run, sorted, so tables and plots list them in a stable order."""
        return sorted({t.domain for t in self.trajectories})

    def metrics(self) -> dict[str, GroupMetrics]:
        """Metrics per domain plus "overall" (the mean over all tasks, not over domains)."""
        by_domain = {d: group_metrics([t for t in self.trajectories if t.domain == d], self.k) for d in self.domains()}
        return {**by_domain, OVERALL: group_metrics(self.trajectories, self.k)}
