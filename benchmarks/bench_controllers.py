"""Rollout controllers across processes: scripted-policy episodes/s with 2 controllers vs 1 (target >= 1.8x on this
2-core machine), then as many concurrent in-flight episodes as memory allows, up to the issue's 32,000, held across
2 controllers with a simulated think time, with memory per in-flight episode and a projection to a cluster.

Throughput: the light ControllerManager streams groups of the scripted gold policy (64 random-complex tasks over 8
domains, groups of 4) from N controller processes into a SampleQueue; the clock starts once every controller has
warmed up and stops when GROUPS groups have come back, so each configuration does the same work. The CPU seconds
per episode of the controllers and of the manager's process are measured too: on a machine other jobs share, the
wall-clock ratio measures the neighbours as much as the split, while the CPU time says what two idle cores give.

In flight: every group is assigned at once (the synchronous `generate` barrier), so every episode's environment is
open at the same time; each generate() batch sleeps THINK_S (a model's decode; sleeping releases the GIL). A first
wave of PROBE episodes on fresh controllers measures resident memory per in-flight episode (peak RSS of the
controller processes minus their RSS after warm-up); the second wave holds min(32,000, what fits in half of the
available memory) episodes, on fresh controllers again, and reports failures and lost episodes. The projection to
a cluster uses the measured CPU and memory per episode and an assumed model latency per turn (CLUSTER_TURN_S).
"""

from __future__ import annotations

import math
import os
import threading
import time
from functools import partial
from typing import Any

import psutil

from toolgym.agent.rollout import RolloutConfig
from toolgym.eval.runner import build_suite
from toolgym.policy.base import Completion, GenerationRequest, SamplingParams
from toolgym.policy.scripted import GoldPolicy
from toolgym.rl.controllers import ControllerManager
from toolgym.rl.manager import ManagerConfig
from toolgym.rl.queue import SampleQueue
from toolgym.tasks.model import Task

TASKS = 64
GROUP_SIZE = 4
GROUPS = 400  # groups per throughput configuration
INFLIGHT_PER_CONTROLLER = 64  # groups in flight per controller in the throughput runs
TARGET_INFLIGHT = 32_000
PROBE = 1_000  # episodes of the memory probe wave
MEMORY_SHARE = 0.5  # of the available memory the big wave may use
THINK_S = 2.0  # simulated decode time per generate() batch
CLUSTER_TURN_S = 10.0  # assumed model latency per agent turn on a cluster (not measured here)


class ThinkingGoldPolicy(GoldPolicy):
    """The gold policy with a fixed sleep per generate() batch, standing for one batched model decode."""

    def __init__(self, tasks: list[Task], think_s: float):
        gold = GoldPolicy.from_tasks(tasks)
        super().__init__(gold.plans, gold.retries)
        self.think_s = think_s

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        time.sleep(self.think_s)
        return super().generate(requests, sampling)


def _manager(tasks: list[Task], factory: Any, controllers: int, inflight_groups: int, max_batch: int,
             capacity: int) -> ControllerManager:
    manager = ControllerManager(tasks, None, SampleQueue(max_staleness=1_000, capacity=capacity),
                                ManagerConfig(group_size=GROUP_SIZE, inflight_groups=inflight_groups),
                                RolloutConfig(max_batch=max_batch), policy_factory=factory, controllers=controllers)
    manager.start()
    return manager


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _throughput(tasks: list[Task], controllers: int) -> tuple[float, float, float]:
    """Episodes/s of `controllers` controllers streaming GROUPS groups of the scripted gold policy, and the CPU
    seconds per episode spent by the controllers and by the manager's process."""
    manager = _manager(tasks, partial(GoldPolicy.from_tasks, tasks), controllers,
                       INFLIGHT_PER_CONTROLLER * controllers, 256, GROUPS * 2)
    workers = [psutil.Process(link.process.pid) for link in manager.links.values()]
    me = psutil.Process()
    worker_cpu, my_cpu = sum(map(_cpu_seconds, workers)), _cpu_seconds(me)
    stop = threading.Event()
    streamer = threading.Thread(target=manager.run, args=(stop,), daemon=True)
    start = time.perf_counter()
    streamer.start()
    while manager.finished < GROUPS and manager.error is None:
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    stop.set()
    streamer.join()
    episodes = manager.finished * GROUP_SIZE
    worker_cpu, my_cpu = sum(map(_cpu_seconds, workers)) - worker_cpu, _cpu_seconds(me) - my_cpu
    manager.close()
    if manager.error is not None:
        raise manager.error
    return episodes / elapsed, worker_cpu / episodes, my_cpu / episodes


def _rss(pids: list[int]) -> int:
    return sum(psutil.Process(pid).memory_info().rss for pid in pids)


def _hold(tasks: list[Task], episodes: int) -> dict[str, float]:
    """Hold `episodes` episodes in flight at once across 2 fresh controllers; memory, time and outcome."""
    groups = math.ceil(episodes / GROUP_SIZE)
    manager = _manager(tasks, partial(ThinkingGoldPolicy, tasks, THINK_S), 2, groups, groups * GROUP_SIZE, groups)
    pids = [link.process.pid for link in manager.links.values()]
    base = _rss(pids)
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss(pids))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    manager.generate(groups)
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    rewards = manager.take_recent_rewards()
    manager.close()
    return {"episodes": groups * GROUP_SIZE, "delivered": len(rewards), "failed": sum(r < 1.0 for r in rewards),
            "seconds": elapsed, "per_episode_bytes": (peak - base) / (groups * GROUP_SIZE), "peak_bytes": peak}


def run() -> dict[str, float]:
    tasks = build_suite("random-complex", TASKS, seed=0)
    print(f"controller benchmark: scripted gold policy, {TASKS} random-complex tasks over 8 domains, groups of "
          f"{GROUP_SIZE}, {os.cpu_count()} cores")
    print(f"  load average before the run (other processes share these cores): "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    rates, worker_ms, manager_ms = {}, {}, {}
    for controllers in (1, 2):
        rates[controllers], worker_s, manager_s = _throughput(tasks, controllers)
        worker_ms[controllers], manager_ms[controllers] = worker_s * 1000, manager_s * 1000
        print(f"  {controllers} controller{'s' if controllers > 1 else ' '}: {rates[controllers]:7.1f} episodes/s "
              f"({GROUPS} groups, {INFLIGHT_PER_CONTROLLER} in flight per controller); CPU per episode: controllers "
              f"{worker_s * 1000:.2f} ms, manager {manager_s * 1000:.2f} ms")
    speedup = rates[2] / rates[1]
    cpu_bound = 2 * worker_ms[1] / (worker_ms[2] + manager_ms[2])
    print(f"  2 controllers / 1: {speedup:.2f}x wall clock (target >= 1.8x); from CPU time alone (what two otherwise "
          f"idle cores give: 2 x CPU per episode with 1 / (controllers' + manager's CPU per episode with 2)): "
          f"{cpu_bound:.2f}x")

    probe = _hold(tasks, PROBE)
    per_episode = probe["per_episode_bytes"]
    fits = int(MEMORY_SHARE * psutil.virtual_memory().available / per_episode)
    target = min(TARGET_INFLIGHT, fits - fits % GROUP_SIZE)
    print(f"  memory probe: {probe['episodes']} episodes in flight, {per_episode / 2**20:.2f} MiB per in-flight "
          f"episode; {TARGET_INFLIGHT:,} would need {TARGET_INFLIGHT * per_episode / 2**30:.1f} GiB, "
          f"{MEMORY_SHARE:.0%} of the available memory holds {fits:,}")
    held = _hold(tasks, target)
    lost = held["episodes"] - held["delivered"]
    print(f"  in flight: {held['episodes']:,} episodes held at once across 2 controllers ({THINK_S:g} s think time per "
          f"batch): {held['seconds']:.1f} s, {held['delivered']:,} delivered, {held['failed']} failed, {lost} lost, "
          f"{held['per_episode_bytes'] / 2**20:.2f} MiB per in-flight episode, controllers' peak RSS "
          f"{held['peak_bytes'] / 2**30:.1f} GiB")
    core_s = worker_ms[1] / 1000  # CPU seconds per episode of one controller
    turns = sum(len(t.gold_chain) + 1 for t in tasks) / len(tasks)  # the gold policy: one call a turn, then answer
    needed = TARGET_INFLIGHT / (CLUSTER_TURN_S * turns)  # episodes/s that keep TARGET_INFLIGHT in flight
    print(f"  projection: {core_s * 1000:.1f} ms of CPU per episode here ({1 / core_s:.0f} episodes/s per core); "
          f"{TARGET_INFLIGHT:,} in flight need {TARGET_INFLIGHT * per_episode / 2**30:.1f} GiB of controller memory "
          f"and, at an assumed {CLUSTER_TURN_S:g} s of model time per turn and {turns:.1f} turns per episode, "
          f"{needed:.0f} episodes/s, i.e. about {math.ceil(needed * core_s)} controller cores")
    return {"speedup": speedup, "cpu_bound_speedup": cpu_bound, "one": rates[1], "two": rates[2],
            "inflight": held["episodes"], "lost": lost, "failed": held["failed"],
            "mib_per_episode": held["per_episode_bytes"] / 2**20}


if __name__ == "__main__":
    import bench_controllers  # run under its module name, so controller processes can import ThinkingGoldPolicy

    bench_controllers.run()
