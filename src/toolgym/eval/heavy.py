"""Single vs self-consistency@K vs agentic Heavy Thinking@K (and the best-of-K oracle) on one task suite.

All methods use `make_episodes` with the same seed, so each trial sees the same instruction and tool noise. The
aggregators share one set of K forked candidates per episode (the comparison isolates how candidates are combined)
and each commits onto its own fresh copy of the real environments. Aggregated trajectories carry the candidates'
turns and tokens, so the report's cost columns compare honestly against the single run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from toolgym.agent.rollout import RolloutConfig
from toolgym.agent.trajectory import Trajectory
from toolgym.eval.metrics import EvalRun
from toolgym.eval.runner import NoiseMode, evaluate, make_episodes
from toolgym.heavy.agentic import (
    AgenticHeavyConfig,
    HeavyOutcome,
    run_candidates,
    summarize,
)
from toolgym.heavy.baselines import best_of_k, self_consistency
from toolgym.policy.base import Policy
from toolgym.tasks.model import Task


def evaluate_heavy(policy: Policy, tasks: list[Task], k_trials: int = 1, K: int = 4, noise: NoiseMode = "none",
                   level: float = 0.5, config: AgenticHeavyConfig | None = None, rollout: RolloutConfig | None = None,
                   seed: int = 0, summary_policy: Policy | None = None, policy_name: str = "policy",
                   concurrency: int = 64, oracle: bool = True, suffix: str = "",
                   on_done: Callable[[Trajectory], None] | None = None,
                   summarizers: Mapping[str, Policy] | None = None) -> list[EvalRun]:
    """Runs `single`, `self-consistency@K`, `heavy@K`, `heavy@K (LABEL)` for each extra summary policy in
    `summarizers` (e.g. one trained with heavy.summary_rl), and (if `oracle`) `best-of-K (oracle)`, k_trials each,
    every name followed by `suffix`; all of them combine the same candidates.

    `K` overrides `config.k`; without a config, candidates sample at the rollout's temperature and seed. The summary
    policy defaults to `policy`; `on_done` sees the single run's and the candidates' episodes."""
    rollout = rollout or RolloutConfig()
    config = (config or AgenticHeavyConfig(temperature=rollout.sampling.temperature, seed=rollout.sampling.seed)
              ).model_copy(update={"k": K})
    runs = [evaluate(policy, tasks, k_trials, noise, level, rollout, seed, name="single" + suffix,
                     policy_name=policy_name, concurrency=concurrency, on_done=on_done)]
    source = make_episodes(tasks, k_trials, noise, level, seed)
    candidates = run_candidates(source, policy, config, rollout, concurrency, on_done)
    for ep in source:
        ep.env.close()
    methods: list[tuple[str, Callable[..., list[HeavyOutcome]]]] = [
        (f"self-consistency@{K}", lambda eps: self_consistency(eps, candidates, rollout, config.commit_retries)),
        (f"heavy@{K}", lambda eps: summarize(eps, candidates, summary_policy or policy, config, rollout)),
        *((f"heavy@{K} ({label})", lambda eps, s=summarizer: summarize(eps, candidates, s, config, rollout))
          for label, summarizer in (summarizers or {}).items()),
    ]
    if oracle:
        methods.append((f"best-of-{K} (oracle)", lambda eps: best_of_k(eps, candidates, rollout,
                                                                          config.commit_retries)))
    for name, method in methods:
        episodes = make_episodes(tasks, k_trials, noise, level, seed)
        outcomes = method(episodes)
        for ep in episodes:
            ep.env.close()
        runs.append(EvalRun(name=name + suffix, policy=policy_name, k=k_trials, trajectories=[o.trajectory for o in outcomes]))
    return runs
