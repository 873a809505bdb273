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
  (sft.distill), vs the demo's mixed-domain RL model, per domain and overall.
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
from toolgym.eval.metrics import compare_pass_at_1
from toolgym.jsonl import read_jsonl, write_jsonl
from toolgym.models.merge import MergeConfig, merge_checkpoints
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
    """Evaluates arms of one comparison against a baseline evaluation of the demo and writes the table as it goes;
    `base` is the checkpoint the demo's SFT started from (pretrained into the demo directory when it had none)."""

    def __init__(self, demo_dir: Path, out: Path, baseline: str, console: Console):
        self.demo_dir, self.out, self.console = demo_dir, out, console
        self.cfg = demo_config(demo_dir)
        self.base = self.cfg.base if self.cfg.base is not None else demo_dir / "base"
        heldout = list(read_jsonl(demo_dir / "heldout_tasks.jsonl", Task))
        self.heldout = [t for t in heldout if len(t.gold_chain) == 1]
        self.train = list(read_jsonl(demo_dir / "train_tasks.jsonl", Task))
        _, self.eval_rollout = rollout_configs(self.cfg)
        self.baseline = demo_runs(demo_dir, baseline)
        self.arms: list[Arm] = []
        out.mkdir(parents=True, exist_ok=True)

    def arm(self, name: str, make: Callable[[], Path]) -> Arm:
        """Build the arm's model with `make` (timed), evaluate it, compare with the baseline, save the table."""
        start = time.process_time()
        model = make()
        run = evaluate_conditions(self.cfg, model, name, [(CONDITION, self.heldout, "none", self.cfg.constrain)],
                                  self.eval_rollout)[0]
        c = compare_pass_at_1(self.baseline, run.trajectories, seed=self.cfg.seed)
        arm = Arm(name=name, model=str(model), pass_at_1=c.b, difference=c.difference, ci_low=c.ci_low,
                  ci_high=c.ci_high, by_domain=_by_domain(run.trajectories), cpu_seconds=time.process_time() - start)
        write_jsonl(self.out / f"{name}.trajectories.jsonl", run.trajectories)
        self.arms.append(arm)
        self.save()
        self.console.print(f"{name}: pass@1 {arm.pass_at_1:.3f}, {arm.difference:+.3f} "
                           f"[{arm.ci_low:+.3f}, {arm.ci_high:+.3f}] vs baseline, {arm.cpu_seconds:.0f} CPU s")
        return arm

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps({
            "demo": str(self.demo_dir), "condition": CONDITION, "tasks": len(self.heldout),
            "baseline": {"pass_at_1": sum(t.passed for t in self.baseline) / len(self.baseline),
                         "by_domain": _by_domain(self.baseline)},
            "arms": [a.model_dump() for a in self.arms]}, indent=1))

    def table(self, title: str) -> Table:
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
    comp = DemoComparison(demo_dir, demo_dir / "compare-select", f"sft {CONDITION}", console)
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
    comp = DemoComparison(demo_dir, demo_dir / "compare-decompose", f"sft {CONDITION}", console)
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
    comp = DemoComparison(demo_dir, demo_dir / "compare-experts", f"rl {CONDITION}", console)
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
        data = expert_examples(chosen, distill_trials, rollout, device=cfg.device, constrain=cfg.constrain)
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
