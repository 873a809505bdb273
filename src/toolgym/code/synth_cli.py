"""`toolgym tasks synth --domain code`: synthesize validated bug-fix tasks with a progress bar, write them as JSONL,
and print the acceptance rate per mutation kind and the tasks per module."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from toolgym.code.sandbox import SandboxUnavailable
from toolgym.code.tasks import synthesize_code_tasks
from toolgym.jsonl import write_jsonl
from toolgym.tasks.model import Task


def synth_code_tasks(n: int, seed: int, out: Path, show: int, console: Console, workers: int = 2) -> None:
    """Synthesize `n` code tasks (seeded) into `out`; a machine without a sandbox gets a clear error, exit 1."""
    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[tried]} candidates judged"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            job = progress.add_task("validating bug-fix tasks", total=n, tried=0)

            def advance(accepted: bool) -> None:
                progress.update(job, advance=int(accepted), tried=progress.tasks[job].fields["tried"] + 1)

            tasks, stats = synthesize_code_tasks(n, seed, workers=workers, on_candidate=advance)
    except SandboxUnavailable as exc:
        console.print(f"cannot synthesize code tasks: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    write_jsonl(out, tasks)
    table = Table("mutation kind", "tried", "accepted", "acceptance")
    for kind, rate in stats.acceptance().items():
        table.add_row(kind, str(stats.tried[kind]), str(stats.accepted[kind]), f"{rate:.1%}")
    table.add_row("all", str(sum(stats.tried.values())), str(len(tasks)),
                  f"{len(tasks) / max(1, sum(stats.tried.values())):.1%}")
    console.print(table)
    console.print("rejected: " + ", ".join(f"{why} {count}" for why, count in stats.rejected.most_common()))
    elapsed = time.perf_counter() - start
    console.print(f"{len(tasks)} tasks from {len(stats.modules)} modules -> {out} in {elapsed:.1f}s; "
                  "per module: " + ", ".join(f"{m} {c}" for m, c in sorted(stats.modules.items())))
    for t in tasks[:show]:
        console.print(f"{t.id}: {t.instruction}", markup=False, highlight=False)
    if not tasks:
        raise typer.Exit(1)


def code_suite(n: int, seed: int, console: Console) -> list[Task]:
    """`n` code tasks for `toolgym eval --suite code`; a machine without a sandbox gets a clear error, exit 1."""
    try:
        return synthesize_code_tasks(n, seed)[0]
    except SandboxUnavailable as exc:
        console.print(f"cannot build the code suite: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
