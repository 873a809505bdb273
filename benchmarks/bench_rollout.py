"""Rollout throughput with the scripted gold policy at 1, 64 and 1024 concurrent episodes in one process.

Each episode runs a real multi-turn loop (tool calls against its own SQLite environment, the rule-based
user, verification). The baseline is the same loop one episode at a time (concurrency 1), measured in the
same run; ratios show what batching concurrent episodes buys on this machine.
"""

from __future__ import annotations

import time

from toolgym.agent.rollout import Episode, RolloutConfig, run_episodes
from toolgym.envs.environment import Environment
from toolgym.eval.runner import build_suite
from toolgym.policy.scripted import GoldPolicy

LEVELS = (1, 64, 1024)
EPISODES = 1024
TASKS = 64


def run() -> dict[int, float]:
    tasks = build_suite("random-complex", TASKS, seed=0)
    policy = GoldPolicy.from_tasks(tasks)
    results: dict[int, float] = {}
    print(f"rollout benchmark: scripted gold policy, {TASKS} random-complex tasks over 8 domains")
    for level in LEVELS:
        n = EPISODES if level > 1 else 128
        episodes = [Episode(task=tasks[i % TASKS], env=Environment.from_record(tasks[i % TASKS].env), trial=i)
                    for i in range(n)]
        start = time.perf_counter()
        trajs = run_episodes(episodes, policy, RolloutConfig(max_batch=256), concurrency=level)
        elapsed = time.perf_counter() - start
        failed = sum(not t.passed for t in trajs) + sum(t.termination == "error" for t in trajs)
        calls = sum(t.n_tool_calls for t in trajs)
        results[level] = n / elapsed
        base = results[LEVELS[0]]
        print(f"  concurrency {level:5d}: {n:5d} episodes, {n / elapsed:8.1f} episodes/s, {calls / elapsed:9.1f} "
              f"tool calls/s, ratio vs 1: {n / elapsed / base:5.2f}x, failures {failed}")
        for ep in episodes:
            ep.env.close()
    return results


if __name__ == "__main__":
    run()
