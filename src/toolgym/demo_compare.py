"""`toolgym compare`: the report's optional training-recipe items, each measured against the same demo run without it.

Every comparison starts from a finished `toolgym demo` directory (its configuration, task sets, SFT and RL models and
their evaluations) and evaluates new arms on the same held-out basic tasks with the same decoding and seed, so the
demo's own SFT or RL model is the baseline and each difference comes with a paired bootstrap interval.

- `select`: cold-start SFT on a K-Center-Greedy subset (sft.select) vs a random subset of the same size vs all the
  data (the demo's SFT model), at the demo's SFT steps;
- `decompose`: cold-start SFT with decomposition augmentation (sft.decompose): the training tasks plus their
  tool-decomposed versions, and reasoned plans before gold calls, each vs the demo's SFT model at equal steps;
- `experts`: one RL expert per training domain from the demo's SFT model (the demo's RL steps split between them),
  fused by weight averaging, task arithmetic, TIES (models.merge) and distillation of their passed rollouts
  (sft.distill), vs the demo's mixed-domain RL model, per domain and overall;
- `summary`: heavy@K with a summary model trained by RL on K-candidate cases (heavy.summary_rl) vs the untrained
  summary, single, self-consistency@K and best-of-K (oracle), all over the same candidates;
- `verify`: RL with self-verification mixed in (rl.self_verify) vs the demo's RL, with each model's accuracy at
  judging held-out episodes and the agreement curve during training.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from toolgym.agent.trajectory import Trajectory
from toolgym.demo import evaluate_conditions, rollout_configs, sft_config, train_rl
from toolgym.demo_config import DemoConfig
from toolgym.eval.heavy import evaluate_heavy
from toolgym.eval.metrics import EvalRun, compare_pass_at_1
from toolgym.eval.report import series_plot_png, write_report
from toolgym.heavy.agentic import AgenticHeavyConfig
from toolgym.heavy.summary_rl import SummaryGame, collect_cases
from toolgym.jsonl import read_jsonl, write_jsonl
from toolgym.models.merge import MergeConfig, merge_checkpoints
from toolgym.policy.hf import HFPolicy
from toolgym.rl.self_verify import SelfVerification, judge, verification_scores
from toolgym.sft.data import SFTExample, sft_examples
from toolgym.sft.decompose import decomposed_tasks
from toolgym.sft.distill import expert_examples
from toolgym.sft.select import save_selection, select_examples
from toolgym.sft.trainer import SFTConfig, train_sft
from toolgym.tasks.model import Task

CONDITION = "held-out basic clean"


class Arm(BaseModel):
    """One model of a comparison: pass@1 on the held-out basic tasks, its difference from the baseline with a paired
    95% interval, per-domain pass@1, and the CPU seconds that producing it cost (training and evaluation)."""

    name: str
    model: str
    pass_at_1: float
    difference: float
    ci_low: float
    ci_high: float
    by_domain: dict[str, float]
    cpu_seconds: float


def demo_config(demo_dir: Path) -> DemoConfig:
    """The configuration the demo in `demo_dir` ran with (written by `toolgym demo` as demo_config.json)."""
    path = demo_dir / "demo_config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: point --demo at the output directory of a finished `toolgym demo`")
    return DemoConfig.model_validate_json(path.read_text())


def demo_runs(demo_dir: Path, run: str) -> list[Trajectory]:
    """The demo's trajectories of evaluation `run` (e.g. "sft held-out basic clean")."""
    rows = (json.loads(line) for line in (demo_dir / "report" / "trajectories.jsonl").read_text().splitlines())
    found = [Trajectory.model_validate(row) for row in rows if row.pop("run") == run]
    if not found:
        raise ValueError(f"the demo in {demo_dir} has no evaluation named {run!r}")
    return found


def _by_domain(trajectories: list[Trajectory]) -> dict[str, float]:
    domains = sorted({t.domain for t in trajectories})
    return {d: sum(t.passed for t in trajectories if t.domain == d) / sum(t.domain == d for t in trajectories)
            for d in domains}


class DemoComparison:
    """Evaluates arms of one comparison against a baseline evaluation and writes the table as it goes; the baseline
    is one of the demo's evaluations (by name) or, when None, set later (`baseline` = its trajectories). `base` is
    the checkpoint the demo's SFT started from (pretrained into the demo directory when it had none)."""

    def __init__(self, demo_dir: Path, item: str, baseline: str | None, baseline_label: str, command: str,
                 console: Console):
        self.demo_dir, self.out, self.console = demo_dir, demo_dir / f"compare-{item}", console
        self.item, self.baseline_label, self.command = item, baseline_label, command
        self.cfg = demo_config(demo_dir)
        self.base = self.cfg.base if self.cfg.base is not None else demo_dir / "base"
        heldout = list(read_jsonl(demo_dir / "heldout_tasks.jsonl", Task))
        self.heldout = [t for t in heldout if len(t.gold_chain) == 1]
        self.train = list(read_jsonl(demo_dir / "train_tasks.jsonl", Task))
        _, self.eval_rollout = rollout_configs(self.cfg)
        self.baseline = demo_runs(demo_dir, baseline) if baseline is not None else []
        self.arms: list[Arm] = []
        self.extra: dict[str, object] = {}
        """More results for results.json (e.g. verification accuracy)."""
        self.out.mkdir(parents=True, exist_ok=True)

    def arm(self, name: str, make: Callable[[], Path]) -> Arm:
        """Build the arm's model with `make` (timed), evaluate it, compare with the baseline, save the table."""
        start = time.process_time()
        model = make()
        run = evaluate_conditions(self.cfg, model, name, [(CONDITION, self.heldout, "none", self.cfg.constrain)],
                                  self.eval_rollout)[0]
        return self.record(name, str(model), run.trajectories, time.process_time() - start)

    def record(self, name: str, model: str, trajectories: list[Trajectory], cpu_seconds: float) -> Arm:
        """Add an evaluated arm: compare it with the baseline (paired by task), save its episodes and the table."""
        c = compare_pass_at_1(self.baseline, trajectories, seed=self.cfg.seed)
        arm = Arm(name=name, model=model, pass_at_1=c.b, difference=c.difference, ci_low=c.ci_low,
                  ci_high=c.ci_high, by_domain=_by_domain(trajectories), cpu_seconds=cpu_seconds)
        write_jsonl(self.out / f"{name}.trajectories.jsonl", trajectories)
        self.arms.append(arm)
        self.save()
        self.console.print(f"{name}: pass@1 {arm.pass_at_1:.3f}, {arm.difference:+.3f} "
                           f"[{arm.ci_low:+.3f}, {arm.ci_high:+.3f}] vs baseline, {arm.cpu_seconds:.0f} CPU s")
        return arm

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps({
            "demo": str(self.demo_dir), "item": self.item, "command": self.command, "condition": CONDITION,
            "tasks": len(self.heldout),
            "baseline": {"label": self.baseline_label,
                         "pass_at_1": sum(t.passed for t in self.baseline) / max(1, len(self.baseline)),
                         "by_domain": _by_domain(self.baseline)},
            "arms": [a.model_dump() for a in self.arms], **self.extra}, indent=1))

    def table(self, title: str) -> Table:
        """The comparison as a rich table (and, as a side effect, the demo's recipe report brought up to date)."""
        recipe_report(self.demo_dir)
        domains = sorted(_by_domain(self.baseline))
        table = Table("arm", "pass@1", "vs baseline [95% CI]", *domains, "CPU s", title=title)
        base = _by_domain(self.baseline)
        table.add_row("baseline", f"{sum(t.passed for t in self.baseline) / len(self.baseline):.3f}", "",
                      *(f"{base[d]:.3f}" for d in domains), "")
        for a in self.arms:
            table.add_row(a.name, f"{a.pass_at_1:.3f}", f"{a.difference:+.3f} [{a.ci_low:+.3f}, {a.ci_high:+.3f}]",
                          *(f"{a.by_domain.get(d, 0.0):.3f}" for d in domains), f"{a.cpu_seconds:.0f}")
        return table


def compare_selection(demo_dir: Path, fraction: float = 0.5, console: Console | None = None) -> Table:
    """K-Center-Greedy subset vs random subset of the demo's SFT data, at the demo's SFT steps, against the demo's
    SFT model (all the data)."""
    console = console or Console()
    comp = DemoComparison(demo_dir, "select", f"sft {CONDITION}", "demo SFT, all the data",
                          f"toolgym compare select --demo {demo_dir} --fraction {fraction:g}", console)
    cfg = comp.cfg
    examples = list(read_jsonl(demo_dir / "sft_data.jsonl", SFTExample))
    for method in ("kcenter", "random"):
        def make(method: str = method) -> Path:
            kept = select_examples(comp.base, examples, fraction, method, cfg.seed, device=cfg.device)
            out = comp.out / method
            out.mkdir(parents=True, exist_ok=True)
            save_selection(out / "selected.json", method, fraction, cfg.seed, kept, examples)
            train_sft(comp.base, [examples[i] for i in kept], out, sft_config(cfg))
            return out
        comp.arm(f"{method} {fraction:g}", make)
    return comp.table(f"SFT data selection ({len(examples)} examples, {cfg.sft_steps} steps each)")


def compare_decomposition(demo_dir: Path, reason_p: float = 0.5, console: Console | None = None) -> Table:
    """SFT with tool decomposition (decomposed tasks added) and with reasoning decomposition (reasoned plans before
    a `reason_p` share of gold calls), each at the demo's SFT steps, against the demo's SFT model."""
    console = console or Console()
    comp = DemoComparison(demo_dir, "decompose", f"sft {CONDITION}", "demo SFT",
                          f"toolgym compare decompose --demo {demo_dir} --reason-p {reason_p:g}", console)
    cfg = comp.cfg
    added: list[Task] = []

    def train(name: str, tasks: list[Task], **augment: float) -> Path:
        examples = list(sft_examples(tasks, cfg.seed, variants=cfg.sft_variants, plan_p=0.0, **augment))
        train_sft(comp.base, examples, comp.out / name, sft_config(cfg))
        return comp.out / name

    def tool_decomposition() -> Path:
        added.extend(decomposed_tasks(comp.train, cfg.seed))
        console.print(f"{len(added)} of {len(comp.train)} training tasks decomposed")
        return train("tool", comp.train + added)
    comp.arm("tool decomposition", tool_decomposition)
    comp.arm(f"reasoned plans {reason_p:g}", lambda: train("reason", comp.train, reason_p=reason_p))
    return comp.table(f"decomposition augmentation ({cfg.sft_steps} SFT steps each; {len(added)} decomposed tasks)")


def compare_experts(demo_dir: Path, distill_tasks: int = 48, distill_trials: int = 2,
                    console: Console | None = None) -> Table:
    """Per-domain RL experts from the demo's SFT model, each alone and fused four ways, against the demo's
    mixed-domain RL model; distillation rolls each expert out `distill_trials` times on `distill_tasks` of its
    domain's training tasks."""
    console = console or Console()
    comp = DemoComparison(demo_dir, "experts", f"rl {CONDITION}", "demo mixed-domain RL",
                          f"toolgym compare experts --demo {demo_dir} --distill-tasks {distill_tasks} "
                          f"--distill-trials {distill_trials}", console)
    cfg, sft = comp.cfg, demo_dir / "sft"
    rollout, _ = rollout_configs(cfg)
    domains = sorted({t.domain for t in comp.train})
    steps = max(1, cfg.rl_steps // len(domains))
    experts: dict[Path, list[Task]] = {}
    for domain in domains:
        tasks = [t for t in comp.train if t.domain == domain]

        def make(domain: str = domain, tasks: list[Task] = tasks) -> Path:
            out = comp.out / f"expert-{domain}"
            write_jsonl(out / "tasks.jsonl", tasks)
            summary = train_rl(cfg, sft, tasks, out / "tasks.jsonl", out, rollout, steps)
            if not summary.steps:
                raise RuntimeError(f"the {domain} expert trained no step: {summary.stopped_reason}")
            experts[out / "model"] = tasks
            return out / "model"
        comp.arm(f"expert {domain}", make)
    for method in ("average", "task_arithmetic", "ties"):
        comp.arm(f"fused {method}", lambda method=method: merge_checkpoints(
            sft, list(experts), comp.out / f"fused-{method}", MergeConfig(method=method)))

    def distill() -> Path:
        chosen = {path: tasks[:distill_tasks] for path, tasks in experts.items()}
        data = expert_examples(chosen, distill_trials, rollout, device=cfg.device, constrain=cfg.constrain, precision=cfg.precision)
        if not data:
            raise RuntimeError("no expert rollout passed: nothing to distill")
        console.print(f"distilling {len(data)} passed expert rollouts")
        out = comp.out / "distilled"
        train_sft(sft, data, out, SFTConfig(epochs=2, lr=cfg.sft_lr, batch_size=cfg.sft_batch, warmup_steps=2,
                                            seed=cfg.seed, device=cfg.device))
        return out
    comp.arm("fused distillation", distill)
    return comp.table(f"domain experts ({steps} RL steps each) and their fusion vs mixed-domain RL "
                      f"({cfg.rl_steps} steps)")


def compare_summary(demo_dir: Path, n_tasks: int = 160, steps: int | None = None, choice_tool: bool = True,
                    console: Console | None = None) -> Table:
    """RL for Heavy Thinking's summary stage: K candidates from the demo's RL model on `n_tasks` basic training tasks
    become training cases (those with a passing and a failing candidate), a summary model is trained on them from
    the demo's RL model with the demo's RL settings (`steps`, default the demo's RL steps), and heavy@K with it is
    compared on the held-out basic tasks, over the same candidates, with the untrained summary (the baseline),
    single, self-consistency@K and best-of-K (oracle)."""
    console = console or Console()
    comp = DemoComparison(demo_dir, "summary", None, "heavy@K, untrained summary (demo RL model)",
                          f"toolgym compare summary --demo {demo_dir} --tasks {n_tasks}"
                          + (f" --steps {steps}" if steps else "") + ("" if choice_tool else " --free-summary"),
                          console)
    cfg, rl = comp.cfg, demo_dir / "rl" / "model"
    rollout, eval_rollout = rollout_configs(cfg)
    config = AgenticHeavyConfig(k=cfg.heavy_k, temperature=eval_rollout.sampling.temperature, seed=cfg.seed,
                                choice_tool=choice_tool)
    start = time.process_time()
    train = [t for t in comp.train if len(t.gold_chain) == 1][:n_tasks]
    candidate_policy = HFPolicy(rl, device=cfg.device, constrain=cfg.constrain, precision=cfg.precision)
    cases = collect_cases(train, candidate_policy, config, eval_rollout)
    mixed = [c for c in cases if c.any_passed and not all(x.passed for x in c.candidates)]
    write_jsonl(comp.out / "cases.jsonl", mixed)
    console.print(f"{len(mixed)} of {len(cases)} training cases have a passing and a failing candidate")
    if not mixed:
        raise RuntimeError("no training case has both a passing and a failing candidate: nothing to learn from")
    tasks_file = comp.out / "case_tasks.jsonl"
    write_jsonl(tasks_file, [c.task for c in mixed])
    # A summary prompt carries K candidates, several times an episode's context, so groups arrive slower than the
    # demo's RL waits for (at 120 s, a run on a busy 2-core machine stopped after 2 of 6 steps).
    slow = cfg.model_copy(update={"rl_max_wait": max(cfg.rl_max_wait, 900.0)})
    summary = train_rl(slow, rl, [c.task for c in mixed], tasks_file, comp.out, rollout, steps or cfg.rl_steps,
                       play=SummaryGame(mixed, config))
    if not summary.steps:
        raise RuntimeError(f"the summary model trained no step: {summary.stopped_reason}")
    trained_seconds = time.process_time() - start
    start = time.process_time()
    runs = evaluate_heavy(candidate_policy, comp.heldout, 1, cfg.heavy_k,
                          rollout=eval_rollout, seed=cfg.seed, config=config, policy_name=str(rl),
                          summarizers={"RL-trained summary": HFPolicy(comp.out / "model", device=cfg.device,
                                                                      constrain=cfg.constrain)})
    evaluated = time.process_time() - start
    by_name = {run.name: run for run in runs}
    comp.baseline = by_name[f"heavy@{cfg.heavy_k}"].trajectories
    comp.extra = {"cases": len(cases), "mixed_cases": len(mixed), "rl_steps": summary.steps,
                  "rl_stopped_reason": summary.stopped_reason,
                  "training_cpu_seconds": trained_seconds, "evaluation_cpu_seconds": evaluated}
    for run in runs:
        trained = run.name.endswith("(RL-trained summary)")
        comp.record(run.name, str(comp.out / "model") if trained else str(rl), run.trajectories,
                    evaluated + (trained_seconds if trained else 0.0))
    return comp.table(f"heavy@{cfg.heavy_k} summary stage: RL-trained ({summary.steps} steps on {len(mixed)} cases) "
                      f"vs untrained (baseline), same candidates")


def compare_verification(demo_dir: Path, ratio: float = 0.5, console: Console | None = None) -> Table:
    """Self-verification mixed into the demo's RL (a `ratio` share of groups also judged, same steps and settings)
    against the demo's RL model: held-out basic pass@1, and how well each model judges the demo RL model's held-out
    episodes (accuracy against the verifier); the per-step agreement during training goes to results.json and a
    plot."""
    console = console or Console()
    comp = DemoComparison(demo_dir, "verify", f"rl {CONDITION}", "demo RL",
                          f"toolgym compare verify --demo {demo_dir} --ratio {ratio:g}", console)
    cfg = comp.cfg
    rollout, eval_rollout = rollout_configs(cfg)
    name = f"RL + self-verification {ratio:g}"

    def make() -> Path:
        summary = train_rl(cfg, demo_dir / "sft", comp.train, demo_dir / "train_tasks.jsonl", comp.out, rollout,
                           cfg.rl_steps, self_verify=SelfVerification(ratio=ratio))
        if not summary.steps:
            raise RuntimeError(f"RL with self-verification trained no step: {summary.stopped_reason}")
        comp.extra.update(rl_steps=summary.steps, rl_stopped_reason=summary.stopped_reason)
        return comp.out / "model"
    comp.arm(name, make)
    rows = [json.loads(line) for line in (comp.out / "metrics.jsonl").read_text().splitlines()]
    curve = [{"step": r["step"], "agreement": r["verify_accuracy"], "judgments": r["verify_judgments"],
              "series": "judgments of the rollouts since the last step"}
             for r in rows if r.get("verify_accuracy") is not None]
    truths = [t.passed for t in comp.baseline]
    scores = {}
    for label, model in (("demo RL", demo_dir / "rl" / "model"), (name, comp.out / "model")):
        verdicts = judge(HFPolicy(model, device=cfg.device, constrain=cfg.constrain, precision=cfg.precision), comp.baseline, eval_rollout)
        scores[label] = verification_scores(verdicts, truths).model_dump()
        console.print(f"{label} judging the demo RL model's held-out episodes: {scores[label]}")
    comp.extra.update(verification_on_heldout=scores, verification_curve=curve)
    if curve:
        (comp.out / "verification_accuracy.png").write_bytes(series_plot_png(
            curve, "step", {"agreement": "verdicts agreeing with the verifier"}, "series",
            f"self-verification during RL (ratio {ratio:g})"))
    comp.save()
    return comp.table(f"RL with self-verification (ratio {ratio:g}, {cfg.rl_steps} steps) vs the demo's RL")


ITEMS = ("summary", "verify", "experts", "select", "decompose")
"""The recipe items in the issue's order: summary-stage RL, self-verification, experts and fusion, data selection,
decomposition augmentation."""


def recipe_report(demo_dir: Path) -> Path:
    """One table of every finished comparison of the demo (each arm vs its baseline, pass@1 with the paired 95%
    interval, the command, the CPU seconds) as DEMO/recipe/recipe.md and in DEMO/recipe/report.html with the arms'
    episodes; returns the HTML path."""
    rows, runs = [], []
    for item in ITEMS:
        path = demo_dir / f"compare-{item}" / "results.json"
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        base = results["baseline"]
        for arm in results["arms"]:
            rows.append({"item": item, "arm": arm["name"], "pass@1": f"{arm['pass_at_1']:.3f}",
                         "vs baseline [95% CI]": f"{arm['difference']:+.3f} [{arm['ci_low']:+.3f}, "
                                                 f"{arm['ci_high']:+.3f}]",
                         "baseline": f"{base.get('label', 'baseline')} {base['pass_at_1']:.3f}",
                         "CPU s": f"{arm['cpu_seconds']:.0f}",
                         "command": results.get("command", f"toolgym compare {item} --demo {demo_dir}")})
            episodes = path.parent / f"{arm['name']}.trajectories.jsonl"
            if episodes.exists():
                runs.append(EvalRun(name=f"{item}: {arm['name']}", policy=arm["model"], k=1,
                                    trajectories=list(read_jsonl(episodes, Trajectory))))
    out = demo_dir / "recipe"
    out.mkdir(parents=True, exist_ok=True)
    header = list(rows[0]) if rows else ["item"]
    (out / "recipe.md").write_text("\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                                              *("| " + " | ".join(r[k] for k in header) + " |" for r in rows)]) + "\n")
    if not runs:
        return out / "recipe.md"
    curve = demo_dir / "compare-verify" / "verification_accuracy.png"
    figures = ({"verification_accuracy": (curve.read_bytes(), "self-verification: share of the policy's verdicts "
                                                             "agreeing with the verifier, per RL step")}
               if curve.exists() else None)
    return write_report(runs, out, title="toolgym: the report's training recipe, each item against its baseline",
                        figures=figures,
                        headline=f"{len(rows)} arms of {len({r['item'] for r in rows})} recipe items on the demo's "
                                 f"held-out basic tasks (pass@1, paired 95% intervals)",
                        tables={"recipe items vs their baselines": rows})
