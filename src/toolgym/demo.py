"""`make demo`: the whole system end to end on the embedded default, on CPU, showing that training helps.

1. environment scaling: the training domains' environments sampled, basic- and multi-tier tasks synthesized and
   verified; the first `heldout_envs` environments of each domain give the held-out tasks and are never trained on;
2. the base model: the shipped `toolgym pretrain --recipe tiny` checkpoint (trained on other domains), or the same
   recipe run from scratch;
3. cold-start SFT on environment-grounded gold trajectories of the training environments;
4. evaluation of the base (held-out basic, clean: SFT minus base with a paired interval) and of the SFT model:
   held-out basic tier clean and noisy, held-out multi tier, training tasks, and held-out
   basic with free (unconstrained) decoding;
5. asynchronous GSPO (DORA-style: streaming rollouts, staleness-bounded queue) on the training tasks;
6. the same evaluation of the RL model, and RL minus SFT per condition with paired bootstrap intervals;
7. single vs self-consistency@K vs agentic Heavy Thinking@K vs best-of-K (oracle) with the RL model;
8. one HTML report with the reward curve and a sentence saying what improved.
Everything lands in runs/demo/.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from toolgym.agent.rollout import RolloutConfig
from toolgym.demo_config import DemoConfig
from toolgym.domains import load_domain
from toolgym.envs.sample import EnvironmentSampler
from toolgym.eval.heavy import evaluate_heavy
from toolgym.eval.metrics import Comparison, EvalRun, compare_pass_at_1
from toolgym.eval.report import training_curve_png, write_report
from toolgym.eval.runner import evaluate
from toolgym.heavy.agentic import AgenticHeavyConfig
from toolgym.jsonl import write_jsonl
from toolgym.policy.base import SamplingParams
from toolgym.policy.hf import HFPolicy, load_tokenizer, quiet_transformers
from toolgym.policy.pretrain import RECIPES, pretrain
from toolgym.policy.pretrained import PullError, pull
from toolgym.assets import TINY_BASE
from toolgym.rl.config import RLConfig, TrainerConfig
from toolgym.rl.manager import GroupPlayer, ManagerConfig
from toolgym.rl.runtime_local import RunSummary, TrainingRun, configured_player
from toolgym.rl.self_verify import SelfVerification
from toolgym.rl.trainer import Trainer
from toolgym.sft.data import sft_examples
from toolgym.sft.trainer import SFTConfig, train_sft
from toolgym.tasks.model import Task
from toolgym.tasks.perturb import drop_last_write
from toolgym.tasks.tiers import tier_tasks
from toolgym.envs.families import replay
from toolgym.tasks.verify import gold_answer

TaskSets = dict[str, list[Task]]
"""'train', 'heldout basic', 'heldout multi'."""


def task_sets(cfg: DemoConfig) -> tuple[TaskSets, Table]:
    """Per training domain: environments sampled with the demo's seed; the first `heldout_envs` give held-out basic
    and multi tasks, the others training tasks of both tiers. Every task is verified (its gold chain passes;
    dropping its last write fails)."""
    table = Table("domain", "tools", "envs", "train basic", "train multi", "held-out basic", "held-out multi",
                  "gold pass", "broken fails")
    sets: TaskSets = {"train": [], "heldout basic": [], "heldout multi": []}
    for name in cfg.train_domains:
        domain = load_domain(name)
        found: TaskSets = {key: [] for key in sets}
        for i, env in enumerate(EnvironmentSampler(domain, cfg.seed).sample_many(cfg.envs_per_domain)):
            env_seed = cfg.seed * 7919 + i
            if i < cfg.heldout_envs:
                found["heldout basic"] += tier_tasks(env, "basic", cfg.heldout_basic_per_env, env_seed)
                found["heldout multi"] += tier_tasks(env, "multi", cfg.heldout_multi_per_env, env_seed)
            else:
                found["train"] += tier_tasks(env, "basic", cfg.basic_per_env, env_seed)
                found["train"] += tier_tasks(env, "multi", cfg.multi_per_env, env_seed)
            env.close()
        tasks = [t for group in found.values() for t in group]
        passed = sum(replay(t, t.gold_chain, gold_answer(t)).passed for t in tasks)
        writing = [t for t in tasks if t.expected_changes]
        broken = sum(not replay(t, drop_last_write(t, domain), gold_answer(t)).passed for t in writing)
        tiers = {key: [len(t.gold_chain) for t in group] for key, group in found.items()}
        table.add_row(name, str(len(domain.tools)), str(cfg.envs_per_domain), str(tiers["train"].count(1)),
                      str(tiers["train"].count(2)), str(len(found["heldout basic"])), str(len(found["heldout multi"])),
                      f"{passed}/{len(tasks)}", f"{broken}/{len(writing)}")
        for key in sets:
            sets[key] += found[key]
    rng = random.Random(cfg.seed)
    for group in sets.values():  # domains interleaved, so any prefix (the heavy comparison's subset) mixes them
        rng.shuffle(group)
    return sets, table


def base_model(cfg: DemoConfig, console: Console) -> Path:
    """The checkpoint SFT starts from: `cfg.base`, else the tiny model's (shipped, or pretrained from scratch into
    out/base), else SmolLM2 pulled into the cache (a no-op once it is there)."""
    if cfg.base is not None:
        console.rule(f"2. base model: {cfg.base}")
        return cfg.base
    if cfg.from_scratch:
        console.rule("2. base model: pretraining from scratch (toolgym pretrain --recipe tiny)")
        pretrain(RECIPES["tiny"].model_copy(update={"seed": cfg.seed}), cfg.out / "base")
        return cfg.out / "base"
    if cfg.model == "tiny":
        console.rule(f"2. base model: the shipped tiny checkpoint ({TINY_BASE})")
        return TINY_BASE
    console.rule("2. base model: SmolLM2-135M-Instruct (toolgym models pull smollm2-135m-instruct)")
    try:
        pulled = pull("smollm2-135m-instruct", say=lambda line: console.print(f"  {line}", markup=False))
    except PullError as exc:
        console.print(str(exc), style="red", markup=False)
        raise SystemExit(2) from None
    console.print(f"{pulled.path} ({'cached' if pulled.cached else f'pulled in {pulled.seconds:.0f}s'})",
                  markup=False)
    return pulled.path


def evaluations(cfg: DemoConfig, sets: TaskSets) -> list[tuple[str, list[Task], str, str]]:
    """(condition, tasks, noise mode, decoding) of every evaluation the SFT and RL models both get; the last one
    (free decoding) only the SFT model gets."""
    train_basic = [t for t in sets["train"] if len(t.gold_chain) == 1][:cfg.train_eval_tasks]
    side = sets["heldout basic"][:cfg.side_eval_tasks]
    return [("held-out basic clean", sets["heldout basic"], "none", cfg.constrain),
            ("held-out basic noisy", side, "all", cfg.constrain),
            ("held-out multi clean", sets["heldout multi"][:cfg.multi_eval_tasks], "none", cfg.constrain),
            ("train basic clean", train_basic, "none", cfg.constrain),
            ("held-out basic clean, free decoding", side, "none", "none")]


def sft_config(cfg: DemoConfig) -> SFTConfig:
    """The demo's cold-start SFT schedule: `sft_steps` steps whatever the data size, so variants compare at equal
    compute."""
    return SFTConfig(max_steps=cfg.sft_steps, lr=cfg.sft_lr, batch_size=cfg.sft_batch, warmup_steps=20,
                     context_loss_weight=cfg.sft_context_weight, seed=cfg.seed, device=cfg.device,
                     precision=cfg.precision)


def rollout_configs(cfg: DemoConfig) -> tuple[RolloutConfig, RolloutConfig]:
    """(RL rollouts: temperature 1 with the progress reward, evaluation: temperature 0.7, pass/fail, seeded)."""
    rollout = RolloutConfig(max_turns=cfg.max_turns, max_total_tokens=4096, progress_reward=cfg.rl_progress_reward,
                            sampling=SamplingParams(temperature=1.0, max_new_tokens=cfg.max_new_tokens))
    return rollout, rollout.model_copy(update={"progress_reward": 0.0, "sampling": SamplingParams(
        temperature=0.7, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)})


def evaluate_conditions(cfg: DemoConfig, path: Path, tag: str, chosen: list[tuple[str, list[Task], str, str]],
                        eval_rollout: RolloutConfig) -> list[EvalRun]:
    """One EvalRun per (condition, tasks, noise, decoding) for the model in `path`, named "{tag} {condition}"."""
    policies = {mode: HFPolicy(path, device=cfg.device, constrain=mode, precision=cfg.precision) for mode in {c[3] for c in chosen}}
    return [evaluate(policies[decoding], tasks, cfg.eval_k, noise, 0.5, eval_rollout, cfg.seed,
                     name=f"{tag} {condition}", policy_name=str(path))
            for condition, tasks, noise, decoding in chosen if tasks]


def train_rl(cfg: DemoConfig, model: Path, tasks: list[Task], tasks_file: Path, out: Path, rollout: RolloutConfig,
             steps: int, self_verify: SelfVerification | None = None, play: GroupPlayer | None = None) -> RunSummary:
    """The demo's asynchronous GSPO stage: `steps` steps on `tasks` (written in `tasks_file`) from `model`, with
    `self_verify` mixed in, or groups from `play` (default: the configured player); the trained model is saved (with
    the tokenizer) to out/model when any step ran."""
    rl_cfg = RLConfig(model=str(model), tasks=str(tasks_file), out=str(out), steps=steps,
                      groups_per_step=cfg.groups_per_step, checkpoint_every=8, max_wait_seconds=cfg.rl_max_wait,
                      constrain=cfg.constrain,
                      manager=ManagerConfig(group_size=cfg.group_size, inflight_groups=2 * cfg.groups_per_step,
                                            seed=cfg.seed),
                      trainer=TrainerConfig(lr=cfg.rl_lr, device=cfg.device, precision=cfg.precision), rollout=rollout, seed=cfg.seed,
                      self_verify=self_verify or SelfVerification())
    trainer = Trainer(rl_cfg.model, rl_cfg.trainer)
    summary = TrainingRun(rl_cfg, tasks, HFPolicy(rl_cfg.model, device=cfg.device, constrain=cfg.constrain,
                                                         precision=cfg.precision),
                          trainer, play=play or configured_player(rl_cfg)).run()
    if summary.steps:
        with quiet_transformers():
            trainer.model.save_pretrained(out / "model")
            load_tokenizer(model).save_pretrained(out / "model")
    return summary


def improvement_sentence(comparisons: dict[str, Comparison], stage: str = "RL") -> str:
    """One sentence on what `stage` changed, read off the paired intervals."""
    parts = []
    for condition, c in comparisons.items():
        verdict = ("rose" if c.ci_low > 0 else "fell" if c.ci_high < 0 else "did not change significantly")
        parts.append(f"{condition} {verdict} ({c.a:.2f} -> {c.b:.2f}, difference {c.difference:+.2f}, "
                     f"95% CI [{c.ci_low:+.2f}, {c.ci_high:+.2f}], {c.n_tasks} tasks)")
    return f"After {stage}, pass@1 on " + "; on ".join(parts) + "."


def main(cfg: DemoConfig = DemoConfig()) -> None:
    console = Console()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(2)
    start = time.perf_counter()
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.json").write_text(cfg.model_dump_json(indent=1))
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
        console.print(f"[green]done[/green] {name} in {timings[name]:.0f}s")

    t0 = time.perf_counter()
    console.rule("1. environment scaling and task sets")
    sets, table = task_sets(cfg)
    console.print(table)
    write_jsonl(out / "train_tasks.jsonl", sets["train"])
    write_jsonl(out / "heldout_tasks.jsonl", sets["heldout basic"] + sets["heldout multi"])
    console.print(f"{len(sets['train'])} training tasks; held-out: {len(sets['heldout basic'])} basic, "
                  f"{len(sets['heldout multi'])} multi (environments never trained on)")
    lap("tasks", t0)

    t0 = time.perf_counter()
    base = base_model(cfg, console)
    cfg = cfg.model_copy(update={"base": base})
    (out / "demo_config.json").write_text(cfg.model_dump_json(indent=1))
    lap("base", t0)

    t0 = time.perf_counter()
    console.rule("3. cold-start SFT")
    examples = list(sft_examples(sets["train"], cfg.seed, variants=cfg.sft_variants, plan_p=0.0))
    write_jsonl(out / "sft_data.jsonl", examples)
    sft_metrics = train_sft(base, examples, out / "sft", sft_config(cfg))
    console.print(f"SFT: {len(sft_metrics)} steps, loss {sft_metrics[0]['loss']:.2f} -> {sft_metrics[-1]['loss']:.2f}")
    lap("sft", t0)

    rollout, eval_rollout = rollout_configs(cfg)
    conditions = evaluations(cfg, sets)

    def evaluate_model(path: Path, tag: str, chosen: list[tuple[str, list[Task], str, str]]) -> list[EvalRun]:
        return evaluate_conditions(cfg, path, tag, chosen, eval_rollout)

    t0 = time.perf_counter()
    console.rule("4. evaluate the base and the SFT model")
    base_runs = evaluate_model(base, "base", conditions[:1])
    before = evaluate_model(out / "sft", "sft", conditions)
    sft_gain = {"held-out basic clean": compare_pass_at_1(base_runs[0].trajectories, before[0].trajectories,
                                                          seed=cfg.seed)}
    lap("eval sft", t0)

    t0 = time.perf_counter()
    console.rule("5. asynchronous GSPO")
    summary = train_rl(cfg, out / "sft", sets["train"], out / "train_tasks.jsonl", out / "rl", rollout, cfg.rl_steps)
    console.print(f"RL: {summary.steps} steps, {summary.trained_groups} groups, trainer idle "
                  f"{summary.trainer_idle_fraction:.0%}, queue {summary.queue}")
    if summary.stopped_reason:
        console.print(f"[yellow]RL stopped early: {summary.stopped_reason}[/yellow]")
    lap("rl", t0)

    after: list[EvalRun] = []
    comparisons: dict[str, Comparison] = {}
    if summary.steps:
        t0 = time.perf_counter()
        console.rule("6. evaluate the RL model")
        after = evaluate_model(out / "rl" / "model", "rl", conditions[:-1])
        comparisons = {b.name.removeprefix("sft "): compare_pass_at_1(b.trajectories, a.trajectories, seed=cfg.seed)
                       for b, a in zip(before, after)}
        lap("eval rl", t0)

    t0 = time.perf_counter()
    console.rule(f"7. single vs self-consistency@{cfg.heavy_k} vs heavy@{cfg.heavy_k} vs best-of-{cfg.heavy_k}")
    final = out / "rl" / "model" if summary.steps else out / "sft"
    heavy = evaluate_heavy(HFPolicy(final, device=cfg.device, constrain=cfg.constrain, precision=cfg.precision),
                           sets["heldout basic"][:cfg.heavy_tasks], 1,
                           cfg.heavy_k, rollout=eval_rollout, seed=cfg.seed,
                           config=AgenticHeavyConfig(temperature=1.0, summary_max_new_tokens=cfg.max_new_tokens,
                                                     seed=cfg.seed),
                           policy_name=str(final), suffix=f" ({'rl' if summary.steps else 'sft'}, held-out basic)")
    lap("heavy", t0)

    rows = [json.loads(line) for line in (out / "rl" / "metrics.jsonl").read_text().splitlines()]
    figures = {"training_curve": (training_curve_png(rows), "RL reward per trainer step")} if rows else {}
    sentence = " ".join([improvement_sentence(sft_gain, "SFT (from the base)"), improvement_sentence(comparisons)
                         if comparisons else f"RL did not run: {summary.stopped_reason}"])
    rl_minus_sft = [{"condition": k, "tasks": c.n_tasks, "sft pass@1": f"{c.a:.3f}", "rl pass@1": f"{c.b:.3f}",
                     "difference": f"{c.difference:+.3f}", "95% CI": f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}]"}
                    for k, c in comparisons.items()]
    sft_minus_base = [{"condition": k, "tasks": c.n_tasks, "base pass@1": f"{c.a:.3f}", "sft pass@1": f"{c.b:.3f}",
                       "difference": f"{c.difference:+.3f}", "95% CI": f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}]"}
                      for k, c in sft_gain.items()]
    html = write_report([*base_runs, *before, *after, *heavy], out / "report",
                        title="toolgym demo: tiny model, SFT then async GSPO",
                        extra={"what_improved": sentence, "train_tasks": len(sets["train"]),
                               "heldout_basic_tasks": len(sets["heldout basic"]),
                               "heldout_multi_tasks": len(sets["heldout multi"]), "base": str(base),
                               "decoding": cfg.constrain, "rl_steps": summary.steps,
                               "rl_stopped_reason": summary.stopped_reason,
                               **({"heldout_basic_gain_per_rl_cpu_minute": round(
                                   comparisons["held-out basic clean"].difference
                                   / (timings["rl"] / 60 * torch.get_num_threads()), 4)}
                                  if "held-out basic clean" in comparisons else {})},
                        figures=figures, headline=sentence, data={
                            "rl_minus_sft": {k: c.model_dump() for k, c in comparisons.items()},
                            "sft_minus_base": {k: c.model_dump() for k, c in sft_gain.items()}},
                        tables={"SFT minus base (paired by task, bootstrap 95% CI)": sft_minus_base,
                                "RL minus SFT (paired by task, bootstrap 95% CI)": rl_minus_sft}, timings=timings)
    result = Table("run", "episodes", "pass@1 [95% CI]", f"pass^{cfg.eval_k}", "progress")
    for r in [*base_runs, *before, *after, *heavy]:
        m = r.metrics()["overall"]
        result.add_row(r.name, str(m.n_trials), f"{m.pass_at_1:.3f} [{m.pass_at_1_ci[0]:.3f}, {m.pass_at_1_ci[1]:.3f}]",
                       f"{m.pass_hat_k:.3f}", f"{m.avg_progress:.3f}")
    console.print(result)
    console.print(sentence)
    console.print(f"report -> {html}; total wall time {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":  # `python -m toolgym.demo [OPTIONS]` (what `make demo` runs) takes `toolgym demo`'s options
    import typer

    from toolgym.cli import demo_cmd

    app = typer.Typer(add_completion=False)
    app.command()(demo_cmd)
    app(sys.argv[1:], prog_name="python -m toolgym.demo")
