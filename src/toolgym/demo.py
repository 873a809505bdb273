"""`make demo`: the whole system end to end on the embedded default, on CPU.

1. environment scaling: every built-in domain compiled, environments sampled, tasks synthesized and verified;
2. train / held-out task sets (short chains, short contexts: the tiny model's world);
3. the tiny model built from scratch (tokenizer trained on the task corpus, random Qwen2-style weights);
4. cold-start SFT on environment-grounded gold trajectories;
5. evaluation of the SFT model on held-out tasks, clean and noisy;
6. asynchronous GSPO (DORA-style: streaming rollouts, staleness-bounded queue);
7. the same evaluation of the RL model;
8. single vs self-consistency@K vs agentic Heavy Thinking@K with the final model, and one HTML report with the
   training curve.
Everything lands in runs/demo/.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoTokenizer

from toolgym.agent.rollout import RolloutConfig
from toolgym.demo_config import DemoConfig
from toolgym.domains import builtin_names, load_domain
from toolgym.envs.sample import EnvironmentSampler
from toolgym.eval.report import training_curve_png, write_report
from toolgym.eval.heavy import evaluate_heavy
from toolgym.eval.runner import evaluate
from toolgym.heavy.agentic import AgenticHeavyConfig
from toolgym.jsonl import write_jsonl
from toolgym.policy.base import SamplingParams
from toolgym.policy.hf import HFPolicy
from toolgym.policy.tiny import build_tiny_model, corpus_from_tasks
from toolgym.rl.config import RLConfig, TrainerConfig
from toolgym.rl.manager import ManagerConfig
from toolgym.rl.runtime_local import TrainingRun
from toolgym.rl.trainer import Trainer
from toolgym.sft.data import sft_examples
from toolgym.sft.trainer import SFTConfig, train_sft
from toolgym.tasks.model import Task
from toolgym.tasks.perturb import drop_last_write
from toolgym.tasks.synthesize import SynthesisConfig, SynthesisFailed, synthesize_task
from toolgym.tasks.verify import gold_answer, replay


def _short(tasks: list[Task], cfg: DemoConfig) -> list[Task]:
    """The tiny model's world: tasks whose rendered gold episode is at most `max_chars` long."""
    return [t for t, text in zip(tasks, corpus_from_tasks(tasks)) if len(text) <= cfg.max_chars]


def task_sets(cfg: DemoConfig) -> tuple[list[Task], list[Task], Table]:
    """Every domain: sample environments, synthesize one task per environment (one target, a chain of at most
    `max_chain` calls) and verify it (gold replay passes, dropping the last write fails). Training domains: the first
    `heldout_envs` environments give the held-out tasks, the others `tasks_per_env` training tasks each, so held-out
    tasks live in environments never trained on."""
    table = Table("domain", "tools", "envs", "tools/env", "tasks", "gold pass", "broken fails")
    synthesis = SynthesisConfig(target_counts=(1,), target_weights=(1.0,), max_calls_per_target=cfg.max_chain)
    train, held = [], []
    for name in builtin_names():
        domain = load_domain(name)
        envs = list(EnvironmentSampler(domain, cfg.seed).sample_many(cfg.envs_per_domain))
        per_env: list[list[Task]] = []
        for i, env in enumerate(envs):
            n = cfg.tasks_per_env if name in cfg.train_domains and i >= cfg.heldout_envs else 1
            found: dict[str, Task] = {}
            for j in range(n):
                try:
                    task = synthesize_task(env, (cfg.seed * 7919 + i) * 100 + j, synthesis, task_id=f"{env.id}-t{j}")
                except SynthesisFailed:
                    continue
                found.setdefault(task.instruction, task)
            per_env.append(list(found.values()))
        tasks = [t for found in per_env for t in found]
        passed = sum(replay(t, t.gold_chain, gold_answer(t)).passed for t in tasks)
        writing = [t for t in tasks if t.expected_changes]
        broken = sum(not replay(t, drop_last_write(t, domain), gold_answer(t)).passed for t in writing)
        table.add_row(name, str(len(domain.tools)), str(len(envs)),
                      f"{statistics.mean(len(e.tool_names) for e in envs):.1f}", str(len(tasks)),
                      f"{passed}/{len(tasks)}", f"{broken}/{len(writing)}")
        if name in cfg.train_domains:
            held.extend(_short([t for found in per_env[:cfg.heldout_envs] for t in found], cfg))
            train.extend(_short([t for found in per_env[cfg.heldout_envs:] for t in found], cfg))
        for env in envs:
            env.close()
    random.Random(cfg.seed).shuffle(train)
    return train, held, table


def main(cfg: DemoConfig = DemoConfig()) -> None:
    console = Console()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(2)
    start = time.perf_counter()
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        timings[name] = time.perf_counter() - t0
        console.print(f"[green]done[/green] {name} in {timings[name]:.0f}s")

    t0 = time.perf_counter()
    console.rule("1-2. environment scaling and task sets")
    train, held, table = task_sets(cfg)
    console.print(table)
    write_jsonl(out / "train_tasks.jsonl", train)
    write_jsonl(out / "heldout_tasks.jsonl", held)
    console.print(f"{len(train)} training tasks, {len(held)} held-out tasks (different environments)")
    lap("tasks", t0)

    t0 = time.perf_counter()
    console.rule("3. tiny model from scratch")
    tiny = build_tiny_model(corpus_from_tasks(train), out / "tiny", cfg.vocab_size, cfg.hidden_size, cfg.layers,
                            max_position_embeddings=4096, seed=cfg.seed)
    lap("tiny model", t0)

    t0 = time.perf_counter()
    console.rule("4. cold-start SFT")
    examples = list(sft_examples(train, cfg.seed))
    write_jsonl(out / "sft_data.jsonl", examples)
    sft_metrics = train_sft(tiny, examples, out / "sft", SFTConfig(
        epochs=cfg.sft_epochs, lr=cfg.sft_lr, batch_size=cfg.sft_batch, warmup_steps=20,
        context_loss_weight=cfg.sft_context_weight, seed=cfg.seed, device=cfg.device))
    console.print(f"SFT: {len(sft_metrics)} steps, loss {sft_metrics[0]['loss']:.2f} -> {sft_metrics[-1]['loss']:.2f}")
    lap("sft", t0)

    rollout = RolloutConfig(max_turns=cfg.max_turns, max_total_tokens=4096, progress_reward=cfg.rl_progress_reward,
                            sampling=SamplingParams(temperature=1.0, max_new_tokens=cfg.max_new_tokens))
    eval_rollout = rollout.model_copy(update={"progress_reward": 0.0, "sampling": SamplingParams(temperature=0.7,
                                                                         max_new_tokens=cfg.max_new_tokens,
                                                                         seed=cfg.seed)})

    def evaluate_model(path: Path, tag: str) -> list:
        policy = HFPolicy(path, device=cfg.device)
        return [evaluate(policy, held, cfg.eval_k, mode, 0.5, eval_rollout, cfg.seed, name=f"{tag}:{label}",
                         policy_name=str(path)) for mode, label in (("none", "clean"), ("all", "noisy"))]

    t0 = time.perf_counter()
    console.rule("5. evaluate SFT model")
    before = evaluate_model(out / "sft", "sft")
    lap("eval sft", t0)

    t0 = time.perf_counter()
    console.rule("6. asynchronous GSPO")
    rl_cfg = RLConfig(model=str(out / "sft"), tasks=str(out / "train_tasks.jsonl"), out=str(out / "rl"),
                      steps=cfg.rl_steps, groups_per_step=cfg.groups_per_step, checkpoint_every=4,
                      max_wait_seconds=cfg.rl_max_wait,
                      manager=ManagerConfig(group_size=cfg.group_size, inflight_groups=2 * cfg.groups_per_step,
                                            seed=cfg.seed),
                      trainer=TrainerConfig(lr=cfg.rl_lr, device=cfg.device), rollout=rollout, seed=cfg.seed)
    trainer = Trainer(rl_cfg.model, rl_cfg.trainer)
    run = TrainingRun(rl_cfg, train, HFPolicy(rl_cfg.model, device=cfg.device), trainer)
    trainer.publish = run.policy.set_weights
    summary = run.run()
    trainer.model.save_pretrained(out / "rl" / "model")
    AutoTokenizer.from_pretrained(out / "sft").save_pretrained(out / "rl" / "model")
    console.print(f"RL: {summary.steps} steps, {summary.trained_groups} groups, trainer idle "
                  f"{summary.trainer_idle_fraction:.0%}, queue {summary.queue}")
    if summary.stopped_reason:
        console.print(f"[yellow]RL stopped early: {summary.stopped_reason}[/yellow]")
    lap("rl", t0)

    after = []
    if summary.steps:
        t0 = time.perf_counter()
        console.rule("7. evaluate RL model")
        after = evaluate_model(out / "rl" / "model", "rl")
        lap("eval rl", t0)

    t0 = time.perf_counter()
    console.rule(f"8. single vs self-consistency@{cfg.heavy_k} vs heavy@{cfg.heavy_k}")
    final = out / "rl" / "model" if summary.steps else out / "sft"
    heavy = evaluate_heavy(HFPolicy(final, device=cfg.device), held, 1, cfg.heavy_k, rollout=eval_rollout, seed=cfg.seed,
                           config=AgenticHeavyConfig(temperature=1.0, summary_max_new_tokens=2 * cfg.max_new_tokens,
                                                     seed=cfg.seed),
                           policy_name=str(final), suffix=f" ({'rl' if summary.steps else 'sft'})")
    lap("heavy", t0)

    rows = [json.loads(line) for line in (out / "rl" / "metrics.jsonl").read_text().splitlines()]
    figures = {"training_curve": (training_curve_png(rows), "RL training curve")} if rows else {}
    html = write_report([*before, *after, *heavy], out / "report", title="toolgym demo: tiny model, SFT then async GSPO",
                        extra={"train_tasks": len(train), "heldout_tasks": len(held), "timings_s": timings,
                               "rl_steps": summary.steps, "rl_stopped_reason": summary.stopped_reason},
                        figures=figures)
    result = Table("run", "pass@1", f"pass@{cfg.eval_k}", f"pass^{cfg.eval_k}", "reward", "progress", "turns")
    for r in [*before, *after, *heavy]:
        m = r.metrics()["overall"]
        result.add_row(r.name, f"{m.pass_at_1:.3f}", f"{m.pass_at_k:.3f}", f"{m.pass_hat_k:.3f}",
                       f"{m.avg_reward:.3f}", f"{m.avg_progress:.3f}", f"{m.avg_turns:.1f}")
    console.print(result)
    console.print(f"report -> {html}; total wall time {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
