"""Trainer throughput and memory on SmolLM2-135M-Instruct: fp32 against bf16 autocast, and the LM head on every
position against the LM head only at trained positions, all in one run on the same batch.

The batch: GROUPS groups x GROUP_SIZE rows of LENGTH seeded random token ids, the last TRAINED tokens of each row
marked as sampled (an RL episode's shape: a long prompt, a short reply), behaviour logprobs from one fp32 no-grad
pass, rewards alternating 0/1. Each arm builds a fresh `Trainer` from the pulled model and times `Trainer.step`
(forward, GSPO loss, backward, clipping, AdamW; under bf16 also the no-grad pass that recomputes pi_old) as the median
of STEPS steps after one untimed step. Peak memory is the process's resident set sampled every 20 ms during the
timed steps, minus the resident set before the arm's trainer was built; the allocator keeps memory freed by earlier
arms, so only the first arm's figure is a clean peak (run one arm alone for another's). Ratios are against fp32 with
the full head.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import torch

from toolgym.agent.trajectory import TokenSegment, Trajectory
from toolgym.policy import logprobs as logprobs_module
from toolgym.policy.hf import load_causal_lm
from toolgym.policy.logprobs import token_logprobs
from toolgym.policy.pretrained import pull
from toolgym.rl.config import TrainerConfig
from toolgym.rl.queue import SampleGroup
from toolgym.rl.trainer import Trainer

GROUPS, GROUP_SIZE = 2, 2
LENGTH, TRAINED = 768, 96
STEPS = 3
THREADS = 2


def _groups(model_dir) -> list[SampleGroup]:
    gen = torch.Generator().manual_seed(0)
    model = load_causal_lm(model_dir).eval()
    ids = torch.randint(100, model.config.vocab_size - 100, (GROUPS * GROUP_SIZE, LENGTH), generator=gen)
    with torch.no_grad():
        old = token_logprobs(model, ids, torch.ones_like(ids))
    rows = []
    for i in range(len(ids)):
        mask = [0] * (LENGTH - TRAINED) + [1] * TRAINED
        lps = [0.0] + [lp if m else 0.0 for lp, m in zip(old[i].tolist(), mask[1:])]
        rows.append(Trajectory(task_id=f"t{i // GROUP_SIZE}", domain="bench", reward=float(i % 2), segments=[
            TokenSegment(token_ids=ids[i].tolist(), loss_mask=mask, logprobs=lps, versions=[0] * LENGTH)]))
    return [SampleGroup(group_id=f"g{g}", task_id=f"t{g}", domain="bench",
                        trajectories=rows[g * GROUP_SIZE:(g + 1) * GROUP_SIZE]) for g in range(GROUPS)]


@contextmanager
def _peak_rss() -> Iterator[list[int]]:
    """Yields a one-item list that holds the peak resident set (bytes) seen while the block ran."""
    process, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


def _arm(model_dir, groups, precision: str, selective: bool) -> tuple[float, float]:
    """(median seconds per step, peak memory above the pre-trainer baseline in GiB)."""
    gc.collect()
    before = psutil.Process().memory_info().rss
    original = logprobs_module._head_only_where
    if not selective:
        logprobs_module._head_only_where = lambda _model: False
    try:
        trainer = Trainer(model_dir, TrainerConfig(lr=1e-5, precision=precision, micro_batch=GROUP_SIZE))
        trainer.step(groups)
        with _peak_rss() as peak:
            times = []
            for _ in range(STEPS):
                start = time.perf_counter()
                trainer.step(groups)
                times.append(time.perf_counter() - start)
    finally:
        logprobs_module._head_only_where = original
    del trainer
    return statistics.median(times), (peak[0] - before) / 2**30


def run() -> None:
    torch.set_num_threads(THREADS)
    model_dir = pull("smollm2-135m-instruct").path
    groups = _groups(model_dir)
    tokens = GROUPS * GROUP_SIZE * LENGTH
    print(f"SmolLM2-135M trainer step, {GROUPS * GROUP_SIZE} rows x {LENGTH} tokens ({TRAINED} trained each), "
          f"{THREADS} threads, median of {STEPS} steps")
    base = None
    for precision, selective in [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]:
        seconds, peak = _arm(model_dir, groups, precision, selective)
        base = base or seconds
        head = "head at trained positions" if selective else "head at every position"
        print(f"  {precision}, {head:26s} {tokens / seconds:7.0f} tokens/s  x{base / seconds:4.2f}  "
              f"peak +{peak:4.1f} GiB")


if __name__ == "__main__":
    run()
