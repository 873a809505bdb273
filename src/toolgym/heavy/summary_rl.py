"""RL for Heavy Thinking's summary stage: the summary model learns to pick (or compose) among K candidates.

A training case is a task plus K candidate trajectories sampled once by a fixed candidate policy on forks of the
task's environment (`collect_cases`). A group of the RL run is `group_size` summaries of one case, sampled by the
policy being trained from the same summary prompt the heavy path uses; each summary's decision is committed onto its
own fresh environment and verified, and the verifier's reward is the summary's reward. The same asynchronous GSPO
machinery trains it: `SummaryGame` is the RolloutManager's group player.

An unusable summary output (no choice, a malformed or out-of-range one) still falls back to self-consistency when the
decision is committed, but earns no reward here: rewarded by the fallback's outcome, RL learns to write unusable
output wherever self-consistency's candidate beats its own choice (on the switchboard it did, and every choice
collapsed onto the fallback's candidate).

Only the summary's own tokens are trained: a case's candidates keep what the prompt shows (their calls, results, user
replies and answers) and drop their token segments and turn records, so neither their tokens nor the candidate
policy's weights version enter a group (staleness is measured from the summary's version alone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pydantic import BaseModel

from toolgym.agent.rollout import BatchedPolicy, Episode, RolloutConfig
from toolgym.envs.families import open_env
from toolgym.heavy.agentic import AgenticHeavyConfig, Candidate, decide, run_candidates, summary_request
from toolgym.policy.base import Policy
from toolgym.rl.manager import ManagerConfig
from toolgym.rl.queue import SampleGroup
from toolgym.tasks.model import Task


class SummaryCase(BaseModel):
    """A summary-stage training case: the task and its K candidates (compressed: no token segments or turns)."""

    task: Task
    candidates: list[Candidate]

    @property
    def any_passed(self) -> bool:
        """Whether some candidate passed on its fork: only then can a choice be rewarded."""
        return any(c.passed for c in self.candidates)


def compressed(candidate: Candidate) -> Candidate:
    """The candidate as a training case keeps it: what the summary prompt shows, without tokens or turn records."""
    return candidate.model_copy(update={"trajectory": candidate.trajectory.model_copy(update={
        "segments": [], "turns": [], "messages": []})})


def collect_cases(tasks: Sequence[Task], policy: Policy, config: AgenticHeavyConfig,
                  rollout: RolloutConfig | None = None, concurrency: int = 64) -> list[SummaryCase]:
    """K candidates per task from `policy` (clean environments, `config`'s temperature and seed), one case each."""
    episodes = [Episode(task=t, env=open_env(t.env)) for t in tasks]
    try:
        candidates = run_candidates(episodes, policy, config, rollout, concurrency)
    finally:
        for ep in episodes:
            ep.env.close()
    return [SummaryCase(task=t, candidates=[compressed(c) for c in cands]) for t, cands in zip(tasks, candidates)]


class SummaryGame:
    """A GroupPlayer: `group_size` summaries of one case, each committed onto a fresh environment and verified."""

    def __init__(self, cases: Sequence[SummaryCase], config: AgenticHeavyConfig):
        self.cases = {case.task.id: case for case in cases}
        self.config = config

    @property
    def tasks(self) -> list[Task]:
        """The cases' tasks, which the RL run's manager schedules."""
        return [case.task for case in self.cases.values()]

    async def __call__(self, client: BatchedPolicy, gid: int, task: Task, cfg: ManagerConfig,
                       rollout: RolloutConfig, noise_levels: dict[str, float] | None, step: int) -> list[SampleGroup]:
        candidates = self.cases[task.id].candidates
        episodes = [Episode(task=task, env=open_env(task.env), trial=i) for i in range(cfg.group_size)]
        tokenizer = getattr(client.policy, "tokenizer", None)
        try:
            summaries = [summary_request(ep, candidates, self.config, rollout, tokenizer) for ep in episodes]
            completions = await asyncio.gather(*(client.generate(s.request) for s in summaries))
            outcomes = [decide(ep, candidates, s, c, self.config)
                        for ep, s, c in zip(episodes, summaries, completions)]
            for outcome in outcomes:
                if outcome.record.decision.kind == "fallback":
                    outcome.trajectory.reward = 0.0
        finally:
            for ep in episodes:
                ep.env.close()
        return [SampleGroup(group_id=f"g{gid}", task_id=task.id, domain=task.domain, created_step=step,
                            trajectories=[o.trajectory for o in outcomes])]
