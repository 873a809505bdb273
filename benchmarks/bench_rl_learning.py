"""RL learning efficiency: pass rate gained per CPU-minute of RL, asynchronous GSPO beside synchronous GSPO (the
batch-barrier baseline), both on the switchboard (toolgym.rl.switchboard) from the same warmed-up tiny model.

Each mode runs the real TrainingRun (RolloutManager, SampleQueue, Trainer, local runtime) for STEPS trainer steps of
GROUPS_PER_STEP groups x GROUP_SIZE rollouts with the same config except `mode`; rollouts decode without the
tool-call grammar. The pass rate is measured before and after with TRIALS episodes of every task (each task weighted
alike, so a one-button habit scores chance). CPU time is this process's (`time.process_time`, every thread) during
`TrainingRun.run()` only: warm-up and evaluation are outside it. The ratio async / sync of gain per CPU-minute above 1
means the streaming pipeline turns CPU into learning faster than waiting for each whole batch; on one small CPU
both modes spend nearly all their time on the same rollouts and updates, so expect a ratio near 1 here and the
throughput gain (benchmarks/bench_async.py) where rollouts and training run on separate devices.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from toolgym.agent.rollout import RolloutConfig
from toolgym.policy.base import SamplingParams
from toolgym.policy.hf import HFPolicy
from toolgym.rl.config import RLConfig, TrainerConfig
from toolgym.rl.manager import ManagerConfig
from toolgym.rl.runtime_local import TrainingRun
from toolgym.rl.switchboard import pass_rate, warm_switchboard
from toolgym.rl.trainer import Trainer

STEPS, GROUPS_PER_STEP, GROUP_SIZE, TRIALS = 20, 16, 8, 32
ROLLOUT = RolloutConfig(max_turns=1, system_prompt="", sampling=SamplingParams(temperature=1.0, max_new_tokens=24))


def _train(mode: str, tasks: list, warm: Path, out: Path) -> tuple[float, float, float, int]:
    """(pass rate after, CPU seconds, wall seconds, steps trained) of one RL run from `warm`."""
    torch.manual_seed(0)
    cfg = RLConfig(model=str(warm), tasks="in-memory", out=str(out), mode=mode, steps=STEPS,
                   groups_per_step=GROUPS_PER_STEP, max_staleness=1, checkpoint_every=0, curriculum=False,
                   max_wait_seconds=60, manager=ManagerConfig(group_size=GROUP_SIZE, inflight_groups=12, seed=0),
                   trainer=TrainerConfig(algorithm="gspo", lr=2e-3, eps_low=0.2, eps_high=0.2), rollout=ROLLOUT)
    trainer = Trainer(cfg.model, cfg.trainer)
    policy = HFPolicy(warm, constrain="none")
    run = TrainingRun(cfg, tasks, policy, trainer, show_progress=False)
    trainer.publish = run.policy.set_weights
    cpu, wall = time.process_time(), time.perf_counter()
    summary = run.run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return pass_rate(policy, tasks, TRIALS, ROLLOUT), cpu, wall, summary.steps


def run() -> dict[str, float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    print(f"RL learning efficiency: switchboard, {STEPS} steps x {GROUPS_PER_STEP} groups x {GROUP_SIZE} rollouts, "
          f"GSPO lr 2e-3, {TRIALS} evaluation episodes per task, one torch thread")
    gains = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tasks, warm = warm_switchboard(Path(tmp), repeats=64, epochs=30)
            before = pass_rate(HFPolicy(warm, constrain="none"), tasks, TRIALS, ROLLOUT)
            print(f"  warmed-up policy: pass rate {before:.2f} (chance 0.25)")
            for mode in ("sync", "async"):
                after, cpu, wall, steps = _train(mode, tasks, warm, Path(tmp) / mode)
                gains[mode] = (after - before) / (cpu / 60)
                print(f"  {mode:5s}: pass rate {before:.2f} -> {after:.2f} in {steps} steps, {cpu / 60:.2f} CPU-min "
                      f"({wall:.0f} s wall): {gains[mode]:+.3f} pass rate per CPU-minute")
    finally:
        torch.set_num_threads(threads)
    ratio = gains["async"] / gains["sync"] if gains["sync"] > 0 else float("nan")
    print(f"  async / sync gain per CPU-minute: {ratio:.2f}x")
    return {"async_gain_per_cpu_min": gains["async"], "sync_gain_per_cpu_min": gains["sync"], "ratio": ratio}


if __name__ == "__main__":
    run()
