"""Evaluation metrics: unbiased pass@k, tau2-bench pass^k, and per-domain aggregates of an evaluation run."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
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


def task_counts(trajectories: list[Trajectory]) -> dict[tuple[str, str], tuple[int, int]]:
    """Per (domain, task_id): (trials, passed trials)."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for t in trajectories:
        entry = counts[(t.domain, t.task_id)]
        entry[0] += 1
        entry[1] += int(t.passed)
    return {task: (n, c) for task, (n, c) in counts.items()}


def task_pass_rates(trajectories: list[Trajectory]) -> dict[tuple[str, str], float]:
    """Per (domain, task_id): the share of its trials that passed (pass@1 of that task)."""
    return {task: c / n for task, (n, c) in task_counts(trajectories).items()}


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, samples: int = 2000, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (one value per task: tasks are the sampled unit)."""
    if not values:
        raise ValueError("cannot bootstrap an empty sample")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(fmean(rng.choices(values, k=n)) for _ in range(samples))
    tail = (1 - confidence) / 2
    return means[int(tail * (samples - 1))], means[int((1 - tail) * (samples - 1))]


class Comparison(BaseModel):
    """pass@1 of run B minus run A over the tasks both ran, with a paired bootstrap interval (tasks resampled)."""

    n_tasks: int
    a: float
    b: float
    difference: float
    ci_low: float
    ci_high: float


def compare_pass_at_1(a: list[Trajectory], b: list[Trajectory], confidence: float = 0.95, seed: int = 0) -> Comparison:
    """B - A on the shared tasks: pairing by task removes task difficulty from the interval of the difference."""
    rates_a, rates_b = task_pass_rates(a), task_pass_rates(b)
    shared = sorted(set(rates_a) & set(rates_b))
    if not shared:
        raise ValueError("the two runs share no task")
    diffs = [rates_b[t] - rates_a[t] for t in shared]
    low, high = bootstrap_ci(diffs, confidence, seed=seed)
    return Comparison(n_tasks=len(shared), a=fmean(rates_a[t] for t in shared), b=fmean(rates_b[t] for t in shared),
                      difference=fmean(diffs), ci_low=low, ci_high=high)


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
    pass_at_1_ci: tuple[float, float] = Field(description="95% bootstrap interval of pass@1, tasks resampled")


def group_metrics(trajectories: list[Trajectory], k: int) -> GroupMetrics:
    """Aggregate trajectories grouped by (domain, task_id); every task uses its own trial count n."""
    if not trajectories:
        raise ValueError("cannot compute metrics of an empty group of trajectories")
    counts = task_counts(trajectories)
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
        pass_at_1_ci=bootstrap_ci([c / n for n, c in counts.values()]),
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
