"""Dynamic rollout budget: a running pass rate per task gives it a value p(1-p), and a greedy heap spends the
rollout groups of a step where that value is highest, so compute goes to tasks the policy is still learning.

Decisions: the pass rate counts only a task's last `window` rollouts, so it follows the policy as it changes (over
the whole run, a task the policy now always solves kept the mid-way rate of its early failures, and so kept most of
the budget); it is Beta-smoothed toward `prior` so a task seen once is not declared solved. A task whose last
`min_trials` or more recent trials all passed (solved) or all failed (hopeless) is worth only `explore`: such groups
have zero group-normalised advantage and teach nothing, yet the policy keeps changing (a failed task may have become
learnable, a solved one forgotten), and a task never sampled again could show neither. `explore` sits below the
value of any task with a mixed window (at the defaults), so such a task is re-probed once the learnable ones have
had their share. Each extra group given to a task is worth less (value / (1 + groups already given)), which spreads
the budget instead of pouring it all into the single best task. If every task is zero-valued (possible only with
`explore` 0), all are treated as equally valuable (round-robin) so training never stalls.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence

PASS_THRESHOLD = 0.5


class PassRateTracker:
    """Each task's recent passes (its last `window` rollouts), turned into a smoothed pass rate and a training value."""

    def __init__(self, prior: float = 0.5, prior_weight: float = 2.0, min_trials: int = 4, window: int = 32,
                 explore: float = 0.025):
        if not 0.0 <= prior <= 1.0 or prior_weight <= 0 or min_trials < 1 or window < min_trials:
            raise ValueError(f"need 0 <= prior <= 1, prior_weight > 0, 1 <= min_trials <= window; got "
                             f"{prior}, {prior_weight}, {min_trials}, {window}")
        if not 0.0 <= explore < 0.25:
            raise ValueError(f"explore must be in [0, 0.25) (below the value of a task passed half the time), got "
                             f"{explore}")
        self.explore = explore
        self.prior = prior
        self.prior_weight = prior_weight
        self.min_trials = min_trials
        self.window = window
        self._recent: dict[str, deque[bool]] = {}

    def update(self, task_id: str, rewards: Sequence[float]) -> None:
        """Record one group of rollouts of `task_id`; a reward >= 0.5 counts as a pass."""
        recent = self._recent.setdefault(task_id, deque(maxlen=self.window))
        recent.extend(r >= PASS_THRESHOLD for r in rewards)

    def trials(self, task_id: str) -> int:
        """Number of recent rollouts of `task_id` counted (at most `window`; 0 if unseen)."""
        return len(self._recent.get(task_id, ()))

    def _passes(self, task_id: str) -> int:
        return sum(self._recent.get(task_id, ()))

    def pass_rate(self, task_id: str) -> float:
        """Beta-smoothed recent pass rate (passes + prior*w) / (trials + w); the prior itself for an unseen task."""
        return (self._passes(task_id) + self.prior * self.prior_weight) / (self.trials(task_id) + self.prior_weight)

    def value(self, task_id: str) -> float:
        """p(1-p), the variance of a pass, or `explore` once `min_trials` recent trials were all passes or all
        failures."""
        trials = self.trials(task_id)
        if trials >= self.min_trials and self._passes(task_id) in (0, trials):
            return self.explore
        p = self.pass_rate(task_id)
        return p * (1.0 - p)

    def state_dict(self) -> dict[str, dict[str, list[int]]]:
        """The recent passes per task (not the configuration), JSON-ready, for checkpoints."""
        return {"recent": {task: [int(x) for x in recent] for task, recent in self._recent.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Replace the counts with those of `state_dict()`; a checkpoint written before the window (whole-run pass
        and trial counts) loads as its most recent possible history, failures first."""
        if "recent" in state:
            history = {task: [bool(x) for x in recent] for task, recent in state["recent"].items()}
        else:
            history = {task: [False] * (trials - state["passes"].get(task, 0)) + [True] * state["passes"].get(task, 0)
                       for task, trials in state["trials"].items()}
        self._recent = {task: deque(h, maxlen=self.window) for task, h in history.items()}


def allocate(task_ids: Sequence[str], tracker: PassRateTracker, total_groups: int,
             max_per_task: int | None = None) -> dict[str, int]:
    """Groups per task (every id present, maybe 0) by greedy max-heap on value / (1 + groups given), ties broken by
    task order; zero-value tasks (possible with `explore` 0) get nothing unless all are zero-valued. The total is
    `total_groups` unless `max_per_task` caps every candidate first."""
    if len(set(task_ids)) != len(task_ids):
        raise ValueError("task_ids must be unique")
    if total_groups < 0 or (max_per_task is not None and max_per_task < 1):
        raise ValueError(f"need total_groups >= 0 and max_per_task >= 1, got {total_groups}, {max_per_task}")
    values = {t: tracker.value(t) for t in task_ids}
    if not any(v > 0 for v in values.values()):
        values = dict.fromkeys(task_ids, 1.0)
    assigned = dict.fromkeys(task_ids, 0)
    heap = [(-v, i, t) for i, (t, v) in enumerate(values.items()) if v > 0]
    heapq.heapify(heap)
    for _ in range(total_groups):
        if not heap:
            break
        _, i, task = heapq.heappop(heap)
        assigned[task] += 1
        if max_per_task is None or assigned[task] < max_per_task:
            heapq.heappush(heap, (-values[task] / (1 + assigned[task]), i, task))
    return assigned
