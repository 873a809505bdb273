"""Code sandboxes: acquire latency from the warm pool vs a cold start (same run), 256 sandboxes held at once (failures,
memory each), and episodes/s of the scripted gold policy on synthesized bug-fix tasks.

Cold: bubblewrap + namespaces + the supervisor's interpreter started on demand. Warm: `SandboxPool.acquire()` of a
sandbox the pool's background thread started ahead of demand (the pool is topped up between timed acquisitions).
Memory per sandbox is the proportional set size (PSS) of all its host processes, so shared libraries are split.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from toolgym.code.pool import SandboxPool
from toolgym.code.sandbox import Sandbox
from toolgym.code.tasks import synthesize_code_tasks
from toolgym.eval.runner import evaluate
from toolgym.policy.scripted import GoldPolicy

SAMPLES = 40
HELD = 256
TASKS, TRIALS = 8, 4


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cold_latencies() -> list[float]:
    out = []
    for _ in range(SAMPLES):
        start = time.perf_counter()
        sandbox = Sandbox.start()
        out.append(time.perf_counter() - start)
        sandbox.close()
    return out


def warm_latencies() -> list[float]:
    pool = SandboxPool(size=8)
    out = []
    try:
        for _ in range(SAMPLES):
            pool.wait_warm()
            start = time.perf_counter()
            sandbox = pool.acquire()
            out.append(time.perf_counter() - start)
            sandbox.close()
        if pool.stats.cold:
            raise RuntimeError("a warm acquisition fell back to a cold start")
    finally:
        pool.close()
    return out


def hold_many() -> tuple[int, float, float]:
    """(failures, seconds to start all, MiB PSS per sandbox) with HELD sandboxes running at once."""
    start = time.perf_counter()
    launched = [Sandbox.launch() for _ in range(HELD)]
    failures = 0
    for sandbox in launched:
        try:
            sandbox.wait_ready(120)
            if sandbox.request("ping").get("ok") is not True:
                failures += 1
        except Exception:  # noqa: BLE001 - a benchmark counts every kind of failure
            failures += 1
    seconds = time.perf_counter() - start
    pss = sum(_pss_kib(pid) for sandbox in launched for pid in sandbox.host_pids())
    for sandbox in launched:
        sandbox.close()
    return failures, seconds, pss / 1024 / HELD


def gold_episodes() -> tuple[float, int, int]:
    tasks, _ = synthesize_code_tasks(TASKS, seed=0, modules=("shlex", "getopt", "colorsys", "graphlib"))
    start = time.perf_counter()
    run = evaluate(GoldPolicy.from_tasks(tasks), tasks, k=TRIALS, concurrency=8)
    elapsed = time.perf_counter() - start
    n = len(run.trajectories)
    return n / elapsed, n, sum(not t.passed for t in run.trajectories)


def run() -> dict[str, float]:
    print("sandbox benchmark: bubblewrap namespaces + unprivileged supervisor, warm pool vs cold start")
    cold = _percentiles(cold_latencies())
    warm = _percentiles(warm_latencies())
    print(f"  acquire, cold start : p50 {cold[0] * 1e3:8.2f} ms   p99 {cold[1] * 1e3:8.2f} ms   ({SAMPLES} samples)")
    print(f"  acquire, warm pool  : p50 {warm[0] * 1e3:8.3f} ms   p99 {warm[1] * 1e3:8.3f} ms   ({SAMPLES} samples)")
    print(f"  warm p50 is {cold[0] / warm[0]:,.0f}x faster than cold (p99: {cold[1] / warm[1]:,.0f}x)")
    failures, seconds, mib = hold_many()
    print(f"  {HELD} sandboxes held at once: {failures} failed, all ready in {seconds:.1f}s, {mib:.1f} MiB PSS each")
    rate, n, failed = gold_episodes()
    print(f"  scripted gold policy: {n} episodes ({TASKS} tasks x {TRIALS}), {rate:.2f} episodes/s, {failed} failed")
    return {"cold_p50_ms": cold[0] * 1e3, "warm_p50_ms": warm[0] * 1e3, "ratio_p50": cold[0] / warm[0],
            "held_failures": failures, "mib_each": mib, "episodes_per_s": rate}


if __name__ == "__main__":
    run()
