"""The context-management sweep of the report, on search tasks: no management, summary-only at each threshold,
discard-only, and hybrid (summary at each threshold plus discard-all past a turn limit), each evaluated with
`toolgym.eval.runner.evaluate` and reported as pass@1, prompt tokens per episode, summaries and resets per episode."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import BaseModel

from toolgym.agent.context import ContextConfig
from toolgym.agent.rollout import RolloutConfig
from toolgym.eval.metrics import EvalRun
from toolgym.eval.runner import evaluate
from toolgym.policy.base import Policy
from toolgym.search.policies import MeteredPolicy
from toolgym.tasks.model import Task

NEVER = 10**9
"""A threshold or turn limit no episode reaches: that mechanism is off."""


class StrategyResult(BaseModel):
    """One cell of the sweep."""

    strategy: str
    summary_threshold_tokens: int | None
    reset_after_turns: int | None
    episodes: int
    pass_at_1: float
    tokens_per_episode: float
    summaries_per_episode: float
    resets_per_episode: float


def strategies(thresholds: Sequence[int], reset_limits: Sequence[int]) -> list[tuple[str, int | None, int | None]]:
    """(name, summary threshold, reset turn limit) of every sweep cell; None means that mechanism is off."""
    return [("none", None, None), *(("summary", t, None) for t in thresholds),
            *(("discard", None, r) for r in reset_limits),
            *(("hybrid", t, r) for r in reset_limits for t in thresholds)]


def context_sweep(tasks: list[Task], make_policy: Callable[[], Policy], thresholds: Sequence[int],
                  reset_limits: Sequence[int], max_turns: int, keep_recent: int = 2,
                  on_cell: Callable[[StrategyResult], None] | None = None
                  ) -> tuple[list[StrategyResult], list[EvalRun]]:
    """Evaluate a fresh policy on `tasks` under every strategy, one trial per task: each cell's figures and run."""
    results, runs = [], []
    for name, threshold, reset in strategies(thresholds, reset_limits):
        context = ContextConfig(summary_threshold_tokens=threshold or NEVER, reset_after_turns=reset or NEVER,
                                keep_recent_tool_results=keep_recent)
        policy = MeteredPolicy(make_policy())
        run = evaluate(policy, tasks, k=1, config=RolloutConfig(max_turns=max_turns, context=context),
                       name=f"{name}:{threshold}:{reset}")
        trajectories = run.trajectories
        n = len(trajectories)
        result = StrategyResult(
            strategy=name, summary_threshold_tokens=threshold, reset_after_turns=reset, episodes=n,
            pass_at_1=sum(t.passed for t in trajectories) / n, tokens_per_episode=policy.prompt_tokens / n,
            summaries_per_episode=sum(e.kind == "summary" for t in trajectories for e in t.events) / n,
            resets_per_episode=sum(e.kind == "reset" for t in trajectories for e in t.events) / n)
        results.append(result)
        runs.append(run)
        if on_cell:
            on_cell(result)
    return results, runs
