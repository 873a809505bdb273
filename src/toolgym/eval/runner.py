"""Evaluation runs: build a task suite, run k trials per task (clean or noisy), and collect trajectories."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from typing import Literal

from toolgym.agent.rollout import Episode, RolloutConfig, run_episodes
from toolgym.agent.trajectory import Trajectory
from toolgym.domains import builtin_names, load_domain
from toolgym.envs.families import open_env, takes_noise
from toolgym.envs.sample import EnvironmentSampler
from toolgym.eval.metrics import EvalRun
from toolgym.noise.instruction import apply_instruction_noise
from toolgym.noise.tool import ToolNoise
from toolgym.policy.base import Policy
from toolgym.tasks.model import Task
from toolgym.tasks.synthesize import SynthesisConfig, SynthesisFailed, synthesize_task

NoiseMode = Literal["none", "instruction", "tool", "all"]
SUITES = {
    # Like the report's Random Complex Tasks: random domains, multi-step chains with writes.
    "random-complex": SynthesisConfig(target_counts=(1, 2, 3), target_weights=(0.3, 0.5, 0.2)),
    "simple": SynthesisConfig(target_counts=(1,), target_weights=(1.0,)),
}


def build_suite(name: str = "random-complex", n: int = 100, seed: int = 0, domains: list[str] | None = None,
                min_domains: int = 4) -> list[Task]:
    """`n` tasks spread round-robin over the domains (all built-ins by default; at least `min_domains`)."""
    if name not in SUITES:
        raise ValueError(f"unknown suite '{name}'; suites: {', '.join(SUITES)}")
    domains = domains or builtin_names()
    if len(domains) < min_domains:
        raise ValueError(f"suite '{name}' needs at least {min_domains} domains, got {domains}")
    rng = random.Random(seed)
    samplers = {d: EnvironmentSampler(load_domain(d), seed=rng.getrandbits(32)) for d in domains}
    tasks: list[Task] = []
    i = 0
    while len(tasks) < n:
        domain = domains[i % len(domains)]
        env = samplers[domain].sample()
        try:
            tasks.append(synthesize_task(env, rng.getrandbits(32), SUITES[name], task_id=f"{name}-{i}"))
        except SynthesisFailed:
            pass
        finally:
            env.close()
        i += 1
    return tasks


def make_episodes(tasks: list[Task], k: int, noise: NoiseMode = "none", level: float = 0.5, seed: int = 0
                  ) -> list[Episode]:
    """k episodes per task, each with a fresh environment and, when asked, seeded instruction and tool noise."""
    if noise != "none" and not all(takes_noise(t) for t in tasks):
        families = sorted({t.env.family for t in tasks if not takes_noise(t)})
        raise ValueError(f"noise applies to tool-use tasks only; these tasks include {', '.join(families)} tasks "
                         f"(evaluate them with noise 'none')")
    episodes = []
    for t in tasks:
        for trial in range(k):
            trial_seed = zlib.crc32(f"{seed}:{t.id}:{trial}".encode())
            task, noise_info = t, {}
            if noise in ("instruction", "all"):
                task, _ = apply_instruction_noise(t, level, trial_seed)
                noise_info["instruction"] = level
            env = open_env(t.env)
            if noise in ("tool", "all"):
                env = ToolNoise(level, trial_seed).wrap(env)
                noise_info["tool"] = level
            episodes.append(Episode(task=task, env=env, trial=trial, noise=noise_info))
    return episodes


def evaluate(policy: Policy, tasks: list[Task], k: int = 1, noise: NoiseMode = "none", level: float = 0.5,
             config: RolloutConfig | None = None, seed: int = 0, name: str | None = None, policy_name: str = "policy",
             concurrency: int = 64, on_done: Callable[[Trajectory], None] | None = None) -> EvalRun:
    """Run k trials of every task and return them as an EvalRun (metrics via `run.metrics()`)."""
    episodes = make_episodes(tasks, k, noise, level, seed)
    trajectories = run_episodes(episodes, policy, config or RolloutConfig(), concurrency, on_done=on_done)
    for ep in episodes:
        ep.env.close()
    return EvalRun(name=name or ("clean" if noise == "none" else f"noisy:{noise}"), policy=policy_name, k=k,
                   trajectories=trajectories)
