"""`make demo`: the environment-scaling pipeline end to end on every built-in domain, with a printed summary.

Compiles each domain, samples environments, reverse-synthesizes tasks, replays every gold chain through its
verifier and shows that a corrupted chain fails. Output files land in runs/demo/.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from toolgym.domains import builtin_names, load_domain
from toolgym.envs.sample import EnvironmentSampler
from toolgym.jsonl import write_jsonl
from toolgym.tasks.perturb import drop_last_write
from toolgym.tasks.synthesize import SynthesisFailed, synthesize_task
from toolgym.tasks.verify import gold_answer, replay


def main(out_dir: Path = Path("runs/demo"), envs_per_domain: int = 25, seed: int = 0) -> None:
    console = Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    table = Table("domain", "tools", "envs", "tools/env", "tasks", "chain len", "gold pass", "broken fails", "s")
    all_tasks = []
    for name in builtin_names():
        start = time.perf_counter()
        domain = load_domain(name)
        envs = list(EnvironmentSampler(domain, seed).sample_many(envs_per_domain))
        tasks = []
        for i, env in enumerate(envs):
            try:
                tasks.append(synthesize_task(env, seed + i))
            except SynthesisFailed:
                pass
        write_jsonl(out_dir / f"{name}_envs.jsonl", (e.record() for e in envs))
        passed = sum(replay(t, t.gold_chain, gold_answer(t)).passed for t in tasks)
        writing = [t for t in tasks if t.expected_changes]
        broken = sum(not replay(t, drop_last_write(t, domain), gold_answer(t)).passed for t in writing)
        all_tasks.extend(tasks)
        table.add_row(name, str(len(domain.tools)), str(len(envs)),
                      f"{statistics.mean(len(e.tool_names) for e in envs):.1f}", str(len(tasks)),
                      f"{statistics.mean(t.difficulty.chain_length for t in tasks):.1f}",
                      f"{passed}/{len(tasks)}", f"{broken}/{len(writing)}", f"{time.perf_counter() - start:.1f}")
        for env in envs:
            env.close()
    write_jsonl(out_dir / "tasks.jsonl", all_tasks)
    console.print(table)
    console.print(f"example task ({all_tasks[0].id}): {all_tasks[0].instruction}")
    console.print(f"files in {out_dir}/")


if __name__ == "__main__":
    main()
