"""Distilling experts into one student: the experts' own successful trajectories become the student's SFT data.

The report's alternative to merging weights: each domain expert rolls out on its domain, the verifier keeps the
episodes that passed, and one model is fine-tuned on all of them, so it learns every expert's behaviour from what
each expert actually did (not from gold chains).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from toolgym.agent.rollout import Episode, RolloutConfig, run_episodes
from toolgym.agent.trajectory import Trajectory
from toolgym.envs.families import open_env
from toolgym.policy.hf import HFPolicy
from toolgym.sft.data import SFTExample
from toolgym.tasks.model import Task


def examples_from_trajectories(trajectories: Iterable[Trajectory], tasks: Sequence[Task]) -> list[SFTExample]:
    """One SFT example per passed trajectory, every assistant turn trained on (failed episodes are dropped)."""
    by_id = {t.id: t for t in tasks}
    examples = []
    for traj in trajectories:
        if not traj.passed:
            continue
        task = by_id.get(traj.task_id)
        if task is None:
            raise ValueError(f"trajectory of task {traj.task_id!r} has no task among the {len(by_id)} given")
        env = open_env(task.env)
        tools = env.openai_tools()
        env.close()
        turns = sum(m["role"] == "assistant" for m in traj.messages)
        examples.append(SFTExample(task_id=traj.task_id, domain=traj.domain, messages=traj.messages, tools=tools,
                                   train=[True] * turns))
    return examples


def expert_examples(experts: dict[str | Path, Sequence[Task]], trials: int, rollout: RolloutConfig,
                    device: str = "cpu", constrain: str = "none") -> list[SFTExample]:
    """Each expert checkpoint rolls out `trials` episodes of each of its tasks; the passed ones, as SFT examples."""
    examples: list[SFTExample] = []
    for path, tasks in experts.items():
        policy = HFPolicy(path, device=device, constrain=constrain)
        episodes = [Episode(task=t, env=open_env(t.env), trial=i) for t in tasks for i in range(trials)]
        examples += examples_from_trajectories(run_episodes(episodes, policy, rollout), tasks)
    return examples
