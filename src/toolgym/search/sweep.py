"""The context-management sweep of the report, on search tasks: no management, summary-only at each threshold,
discard-only, and hybrid (summary at each threshold plus discard-all past a turn limit), each evaluated with
`toolgym.eval.runner.evaluate` and reported as pass@1 (with a 95% interval), prompt tokens per episode, summaries and
resets per episode: a table and a plot against the summary threshold for the eval report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from toolgym.agent.context import ContextConfig
from toolgym.agent.rollout import RolloutConfig
from toolgym.eval.metrics import OVERALL, EvalRun
from toolgym.eval.report import series_plot_png
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
    pass_at_1_ci: tuple[float, float]
    tokens_per_episode: float
    summaries_per_episode: float
    resets_per_episode: float

    @property
    def series(self) -> str:
        """The plot line this cell belongs to: its strategy, and for a discard limit its turn limit."""
        return self.strategy + (f" (reset after {self.reset_after_turns} turns)" if self.reset_after_turns else "")


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
        overall = run.metrics()[OVERALL]
        result = StrategyResult(
            strategy=name, summary_threshold_tokens=threshold, reset_after_turns=reset, episodes=n,
            pass_at_1=overall.pass_at_1, pass_at_1_ci=overall.pass_at_1_ci,
            tokens_per_episode=policy.prompt_tokens / n,
            summaries_per_episode=sum(e.kind == "summary" for t in trajectories for e in t.events) / n,
            resets_per_episode=sum(e.kind == "reset" for t in trajectories for e in t.events) / n)
        results.append(result)
        runs.append(run)
        if on_cell:
            on_cell(result)
    return results, runs


SWEEP_COLUMNS = ["strategy", "summary_threshold", "reset_after_turns", "episodes", "pass@1", "pass@1_ci_low",
                 "pass@1_ci_high", "tokens_per_episode", "summaries_per_episode", "resets_per_episode"]
"""The sweep's columns, as `toolgym search sweep` prints them (table or --json)."""


def sweep_rows(results: Sequence[StrategyResult]) -> list[list[Any]]:
    """One row of SWEEP_COLUMNS per cell, rounded for reading."""
    return [[r.strategy, r.summary_threshold_tokens, r.reset_after_turns, r.episodes, round(r.pass_at_1, 3),
             round(r.pass_at_1_ci[0], 3), round(r.pass_at_1_ci[1], 3), round(r.tokens_per_episode),
             round(r.summaries_per_episode, 2), round(r.resets_per_episode, 2)] for r in results]


def report_table(results: Sequence[StrategyResult]) -> list[dict[str, Any]]:
    """The sweep as the eval report's table: pass@1 beside its 95% interval, tokens per episode, events."""
    return [{"strategy": r.strategy, "summary threshold (tokens)": r.summary_threshold_tokens,
             "reset after turns": r.reset_after_turns, "episodes": r.episodes, "pass@1": r.pass_at_1,
             "pass@1 95% CI": f"{r.pass_at_1_ci[0]:.2f}-{r.pass_at_1_ci[1]:.2f}",
             "tokens per episode": round(r.tokens_per_episode), "summaries per episode": r.summaries_per_episode,
             "resets per episode": r.resets_per_episode} for r in results]


def sweep_plot_png(results: Sequence[StrategyResult]) -> bytes:
    """pass@1 and tokens per episode against the summary threshold, one line per strategy (and reset limit); the
    strategies without a threshold (none, discard-only) are dashed horizontal lines."""
    rows = [{"series": r.series, "summary_threshold_tokens": r.summary_threshold_tokens, "pass_at_1": r.pass_at_1,
             "tokens_per_episode": r.tokens_per_episode} for r in results]
    return series_plot_png(rows, "summary_threshold_tokens", {"pass_at_1": "pass@1",
                                                              "tokens_per_episode": "prompt tokens per episode"},
                           "series", "context management: pass@1 and cost against the summary threshold")
