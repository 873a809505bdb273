"""`toolgym search ...`: synthesize validated multi-hop questions (hop counts, each filter's rejection rate, wall
time) and run the context-management sweep (pass@1 and tokens per episode per strategy, written as a report)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from toolgym.cli_output import JsonOpt, console, emit_rows

search_app = typer.Typer(help="Search environments: multi-hop questions over a corpus rendered from an environment.",
                         no_args_is_help=True)
notes = Console(stderr=True)
"""Where --json runs print everything but their JSON, so stdout stays one JSON document."""
DomainsOpt = Annotated[Optional[list[str]], typer.Option("--domain", "-d", help="Built-in domain (repeatable); "
                                                         "default: every built-in domain.")]


def _progress() -> Progress:
    """A transient progress bar on stderr, so a --json document on stdout is never mixed with it."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=notes, transient=True)


def _domains(domains: list[str] | None) -> list[str]:
    from toolgym.domains import builtin_names

    known = builtin_names()
    unknown = [d for d in domains or [] if d not in known]
    if unknown:
        raise typer.BadParameter(f"unknown domain(s) {', '.join(unknown)}; built-in domains: {', '.join(known)}")
    return domains or known


def synthesize_suite(domains: list[str], n: int, seed: int, per_env: int):
    """Build a search suite with a progress bar: (tasks, filter counts per domain)."""
    from toolgym.search.synthesize import build_search_suite

    with _progress() as progress:
        job = progress.add_task("synthesizing search questions", total=n)
        return build_search_suite(domains, n, seed, per_env, on_env=lambda _d, added: progress.advance(job, added))


@search_app.command("synth")
def synth(
    domain: DomainsOpt = None,
    n: Annotated[int, typer.Option("--n", help="Questions in all, spread evenly over the domains.", min=1)] = 1000,
    per_env: Annotated[int, typer.Option(help="Questions per sampled environment.", min=1)] = 25,
    seed: Annotated[int, typer.Option(help="Sampling seed: the same seed gives the same questions.")] = 0,
    out: Annotated[Path, typer.Option(help="Output JSONL of tasks.")] = Path("search_tasks.jsonl"),
    show: Annotated[int, typer.Option(help="Print this many example questions.")] = 2,
    as_json: JsonOpt = False,
) -> None:
    """Generate multi-hop questions, keep those that pass every filter, and report hops and rejection rates."""
    from toolgym.jsonl import write_jsonl
    from toolgym.search.synthesize import FILTERS, SynthesisStats

    names = _domains(domain)
    start = time.perf_counter()
    tasks, stats = synthesize_suite(names, n, seed, per_env)
    wall = time.perf_counter() - start
    write_jsonl(out, tasks)
    total = SynthesisStats()
    for s in stats.values():
        total.merge(s)
    emit_rows(["domain", "accepted", "hops_2", "hops_3", "hops_4", *(f"{f}_rejected_pct" for f in FILTERS)],
              [[name, s.accepted, *(s.accepted_by_hops.get(h, 0) for h in (2, 3, 4)),
                *(round(100 * s.rejection_rate(f), 1) for f in FILTERS)]
               for name, s in [*stats.items(), ("all", total)]], as_json)
    say = notes if as_json else console
    summary = {"questions": len(tasks), "domains": names, "seed": seed, "wall_s": round(wall, 1),
               "hops": {str(h): c for h, c in sorted(total.accepted_by_hops.items())},
               "rejection_rate": {f: round(total.rejection_rate(f), 4) for f in FILTERS},
               "per_domain": {d: s.model_dump() for d, s in stats.items()}}
    out.with_suffix(".stats.json").write_text(json.dumps(summary, indent=2))
    say.print(f"{len(tasks)} questions over {len(names)} domains -> {out} in {wall:.1f} s "
              f"(stats -> {out.with_suffix('.stats.json')})")
    for t in tasks[:show]:
        say.print(f"[cyan]{t.id}[/cyan] {t.instruction} [green]{t.required_answers[0]}[/green]")
    if not tasks:
        say.print("[red]no question passed every filter[/red]")
        raise typer.Exit(1)


@search_app.command("sweep")
def sweep(
    tasks: Annotated[Optional[Path], typer.Option(help="Search tasks JSONL, n taken evenly spaced through it (else a "
                                                  "suite is synthesized).",
                                                  exists=True)] = None,
    domain: DomainsOpt = None,
    n: Annotated[int, typer.Option("--n", help="Tasks to evaluate.", min=1)] = 24,
    seed: Annotated[int, typer.Option(help="Seed of a synthesized suite.")] = 0,
    window: Annotated[int, typer.Option(help="Context window (tokens) of the scripted reader that opens every "
                                        "candidate page; past it the reader gives up.", min=100)] = 8000,
    threshold: Annotated[Optional[list[int]], typer.Option(help="Summary thresholds in tokens (repeatable).")] = None,
    reset: Annotated[Optional[list[int]], typer.Option(help="Discard-all turn limits (repeatable).")] = None,
    max_turns: Annotated[int, typer.Option(help="Model turns per episode.", min=1)] = 200,
    out: Annotated[Path, typer.Option(help="Output folder (results.json, report.html, plots/).")
                   ] = Path("runs/search-sweep"),
    as_json: JsonOpt = False,
) -> None:
    """Context-management sweep on search tasks: none, summary-only, discard-only and hybrid; pass@1 and tokens,
    as a table and an HTML report with the sweep plot and the command that produced it."""
    from toolgym.eval.report import write_report
    from toolgym.jsonl import read_jsonl
    from toolgym.search.policies import ReadEverythingPolicy
    from toolgym.search.sweep import (SWEEP_COLUMNS, context_sweep, report_table, strategies, sweep_plot_png,
                                      sweep_rows)
    from toolgym.tasks.model import Task

    thresholds = threshold or [2000, 4000, 6000]
    resets = reset or [25, 150]
    if tasks is not None:
        found = [t for t in read_jsonl(tasks, Task) if t.env.family == "search"]
        task_list = found[::max(1, len(found) // n)][:n]
        if not task_list:
            raise typer.BadParameter(f"{tasks} holds no search tasks")
    else:
        task_list = synthesize_suite(_domains(domain), n, seed, per_env=max(1, n // 8))[0]
    with _progress() as progress:
        job = progress.add_task("sweeping context strategies", total=len(strategies(thresholds, resets)))
        results, runs = context_sweep(task_list, lambda: ReadEverythingPolicy(task_list, window), thresholds, resets,
                                      max_turns, on_cell=lambda _r: progress.advance(job))
    emit_rows(SWEEP_COLUMNS, sweep_rows(results), as_json)
    source = [f"--tasks {tasks}"] if tasks else [f"--seed {seed}", *(f"--domain {d}" for d in domain or [])]
    command = " ".join(["toolgym search sweep", *source, f"--n {n}", f"--window {window}",
                        *(f"--threshold {t}" for t in thresholds), *(f"--reset {r}" for r in resets),
                        f"--max-turns {max_turns}", f"--out {out}"])
    html = write_report(runs, out, title="toolgym search: context-management sweep",
                        headline=f"Scripted reader with a {window}-token window on {len(task_list)} search tasks.",
                        extra={"command": command, "n": len(task_list), "window": window},
                        tables={"context-management sweep": report_table(results)},
                        figures={"context_sweep": (sweep_plot_png(results),
                                                   "pass@1 and prompt tokens per episode against the summary "
                                                   "threshold, per strategy")},
                        data={"sweep": [r.model_dump() for r in results]})
    (notes if as_json else console).print(f"report -> {html}\n{command}", markup=False, soft_wrap=True)
