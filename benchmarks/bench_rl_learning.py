"""RL learning efficiency: pass rate gained per CPU-minute of RL, asynchronous GSPO beside synchronous GSPO (the
batch-barrier baseline), both on the switchboard (toolgym.rl.switchboard) from the same warmed-up tiny model.

Each mode runs the real TrainingRun (RolloutManager, SampleQueue, Trainer, local runtime) for STEPS trainer steps of
the switchboard's RL config (`rl_config`: 16 groups x 8 rollouts a step), the same except `mode`; rollouts decode
without the tool-call grammar. The pass rate is measured before and after with TRIALS episodes of every task (each
task weighted alike, so a one-button habit scores chance). CPU time is this process's (`time.process_time`, every
thread) during `TrainingRun.run()` only: warm-up and evaluation are outside it. The ratio async / sync of gain per
CPU-minute above 1 would mean the streaming pipeline turns CPU into learning faster than waiting for each whole
batch. On one small CPU async buys no overlap (rollouts and updates share the cores) and pays for stale groups and
groups still in flight at the end, so it comes out below 1 here (0.32x-0.48x measured); its gain is throughput where
rollouts and training run on separate devices (benchmarks/bench_async.py).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from toolgym.policy.hf import HFPolicy
from toolgym.rl.runtime_local import TrainingRun
from toolgym.rl.switchboard import ROLLOUT, pass_rate, rl_config, warm_switchboard
from toolgym.rl.trainer import Trainer

STEPS, TRIALS = 20, 32


def _train(mode: str, tasks: list, warm: Path, out: Path) -> tuple[float, float, float, int]:
    """(pass rate after, CPU seconds, wall seconds, steps trained) of one RL run from `warm`."""
    torch.manual_seed(0)
    cfg = rl_config(warm, out, STEPS, mode=mode)
    trainer = Trainer(cfg.model, cfg.trainer)
    policy = HFPolicy(warm, constrain="none")
    run = TrainingRun(cfg, tasks, policy, trainer, show_progress=False)
    cpu, wall = time.process_time(), time.perf_counter()
    summary = run.run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return pass_rate(policy, tasks, TRIALS, ROLLOUT), cpu, wall, summary.steps


def run() -> dict[str, float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = rl_config(Path("warm"), Path("out"), STEPS)
    print(f"RL learning efficiency: switchboard, {STEPS} steps x {cfg.groups_per_step} groups x "
          f"{cfg.manager.group_size} rollouts, GSPO lr {cfg.trainer.lr:g}, {TRIALS} evaluation episodes per task, "
          "one torch thread")
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
