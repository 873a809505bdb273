"""Asynchronous vs synchronous RL throughput: the real TrainingRun (RolloutManager, SampleQueue, trainer loop) with a
simulated GPU policy and trainer, so only the scheduling differs.

The policy is scripted: each episode follows its task's gold chain (or, on a coin flip, skips the last write and
fails, so groups carry signal) after a long-tailed number of extra read calls, drawn from a lognormal on the
episode's first turn and written into its first message, so later turns replay the same plan. Every generate()
call sleeps a fixed time per batch (GPU decode; sleeping releases the GIL), and every trainer step sleeps a fixed
time and publishes a new version. Sync mode waits for its whole batch, so each step costs the slowest episode of
the batch plus the trainer step; async mode keeps groups in flight while the trainer trains. Both modes run the same
config except `mode`; samples/s and the trainer idle fraction come from the RunSummary.

Scale of the simulated GPU: the real rollout components cost CPU (about 30 ms per episode on this 2-core machine to
build its SQLite environment and verify it), and that work runs on the rollout event loop between decode batches,
so it adds to every batch cycle. At 20 ms per batch and 0.3 s per trainer step it was about 60 ms of each ~80 ms
cycle: long-tailed groups outlived the staleness bound and async reached only about 2x, with the trainer idle most
of the time. Real decode and training steps take seconds, far above that CPU cost, so the simulated GPU times are
scaled up (100 ms per batch, 1.8 s per step, about the same ratio as 20 ms : 0.3 s) and the staleness bound is 4,
so long-tailed groups that span a few updates are still trained.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from toolgym.agent.rollout import RolloutConfig
from toolgym.domains import load_domain
from toolgym.eval.runner import build_suite
from toolgym.policy.base import Completion, GenerationRequest, SamplingParams
from toolgym.policy.scripted import CoinGoldPolicy
from toolgym.rl.config import RLConfig
from toolgym.rl.manager import ManagerConfig
from toolgym.rl.runtime_local import RunSummary, TrainingRun
from toolgym.rl.simulated import SimulatedTrainer
from toolgym.tasks.model import Task

TASKS = 16
DECODE_S = 0.1  # one generate() batch on the GPU
TRAIN_S = 1.8  # one trainer step
EXTRA_READS_MEDIAN = 3.0  # lognormal extra read calls per episode: median and sigma of the underlying normal
EXTRA_READS_SIGMA = 1.3
P_LAZY = 0.5
MAX_TURNS = 48
STEPS = 12
GROUPS_PER_STEP = 4
GROUP_SIZE = 4
INFLIGHT_GROUPS = 10
MAX_STALENESS = 4


class LongTailPolicy(CoinGoldPolicy):
    """CoinGoldPolicy with lognormal extra reads per episode and a fixed sleep per batch (one GPU decode)."""

    def __init__(self, tasks: Sequence[Task], decode_s: float, seed: int = 0):
        super().__init__(tasks, P_LAZY, seed, extra_reads=lambda rng: min(MAX_TURNS, int(rng.lognormvariate(
            math.log(EXTRA_READS_MEDIAN), EXTRA_READS_SIGMA))))
        self.decode_s = decode_s

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        """The scripted turns, after a fixed sleep that stands for one batched decode on the GPU."""
        time.sleep(self.decode_s)
        return super().generate(requests, sampling)


def _tasks() -> list[Task]:
    """Tasks with at least one read (repeated as the extra calls) and one write (skipped by lazy episodes)."""
    tasks = build_suite("random-complex", TASKS, seed=0)
    usable = []
    for t in tasks:
        writes = [load_domain(t.domain).tools[c.name].writes for c in t.gold_chain]
        if any(writes) and not all(writes):
            usable.append(t)
    return usable


def _run_mode(mode: str, tasks: list[Task], out: Path) -> RunSummary:
    cfg = RLConfig(model="simulated", tasks="simulated", out=str(out / mode), mode=mode, steps=STEPS,
                   groups_per_step=GROUPS_PER_STEP, max_staleness=MAX_STALENESS, checkpoint_every=0, curriculum=False,
                   manager=ManagerConfig(group_size=GROUP_SIZE, inflight_groups=INFLIGHT_GROUPS),
                   rollout=RolloutConfig(max_turns=MAX_TURNS, max_batch=256))
    trainer = SimulatedTrainer(TRAIN_S)
    run = TrainingRun(cfg, tasks, LongTailPolicy(tasks, DECODE_S), trainer, show_progress=False)
    return run.run()


def run() -> dict[str, float]:
    tasks = _tasks()
    print(f"async RL benchmark: real TrainingRun, simulated policy ({DECODE_S * 1000:.0f} ms per generate batch) and "
          f"trainer ({TRAIN_S:.2f} s per step), {len(tasks)} random-complex tasks")
    print(f"  settings: steps {STEPS}, groups/step {GROUPS_PER_STEP}, group size {GROUP_SIZE}, inflight groups "
          f"{INFLIGHT_GROUPS}, max staleness {MAX_STALENESS}, extra reads ~ lognormal(median {EXTRA_READS_MEDIAN:g}, "
          f"sigma {EXTRA_READS_SIGMA:g}), lazy p {P_LAZY:g}, max turns {MAX_TURNS}")
    summaries = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("async", "sync"):
            start = time.perf_counter()
            summaries[mode] = s = _run_mode(mode, tasks, Path(tmp))
            print(f"  {mode:5s}: {s.samples_per_s:7.1f} samples/s, trainer idle {s.trainer_idle_fraction:6.1%}, "
                  f"{s.trained_groups} groups trained, dropped no-signal {s.queue['dropped_no_signal']}, stale "
                  f"{s.queue['dropped_stale']}, {time.perf_counter() - start:5.1f} s")
    ratio = summaries["async"].samples_per_s / summaries["sync"].samples_per_s
    idle = summaries["async"].trainer_idle_fraction
    print(f"  async / sync throughput: {ratio:.2f}x (target >= 3x), async trainer idle {idle:.1%} (target < 10%)")
    return {"ratio": ratio, "async_idle": idle, "sync_idle": summaries["sync"].trainer_idle_fraction}


if __name__ == "__main__":
    run()
