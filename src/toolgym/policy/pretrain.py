"""`toolgym pretrain --recipe tiny`: the seeded recipe that produces the embedded default base checkpoint.

Real RL starts from a pretrained model, and a 2-core CPU cannot train a competent tool user from scratch inside a
15-minute demo. The recipe trains the tiny model on the gold episodes of the built-in domains that the demo does
not train or evaluate on (so a demo's held-out environments are never seen, not even their domain), with both task
tiers, value resampling and quoted answers: it learns the call format, reading tool results and quoting facts. Its
tokenizer is trained on rendered episodes of every built-in domain, with word-aligned pieces (policy.tiny), so a field
named in a question and the same field in a tool result share tokens. An optional first stage trains on copy rows
alone (sft.copy_rows, `copy_steps`), and `copy_rows` mixes them into the episode steps; the shipped recipe has both
off (they formed induction heads but did not lift the demo, see the README).
The output is an ordinary transformers checkpoint; toolgym ships the one this recipe made (toolgym.assets.TINY_BASE).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from toolgym.domains import builtin_names, load_domain
from toolgym.envs.sample import EnvironmentSampler
from toolgym.policy.hf import load_causal_lm, quiet_transformers
from toolgym.policy.tiny import build_tiny_model, corpus_from_tasks
from toolgym.sft.copy_rows import CopyRowSpec, train_copy_rows
from toolgym.sft.data import sft_examples
from toolgym.sft.trainer import SFTConfig, train_sft
from toolgym.tasks.model import Task
from toolgym.tasks.tiers import tier_tasks

class PretrainRecipe(BaseModel):
    """Everything that decides the base checkpoint; the same recipe and seed give the same data and schedule."""

    model_config = ConfigDict(frozen=True)

    domains: tuple[str, ...] = ("car_rental", "clinic", "hotel", "retail", "telecom")
    envs_per_domain: int = Field(40, ge=1)
    basic_per_env: int = Field(4, ge=0)
    multi_per_env: int = Field(2, ge=0)
    env_seed: int = 1000
    """Sampler seed of the pretraining environments (the demo samples with its own seed, 0 by default)."""
    vocab_size: int = 4000
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    max_positions: int = 4096
    steps: int = Field(1000, ge=1)
    batch_size: int = 8
    lr: float = 2e-3
    context_loss_weight: float = 0.25
    variants: int = Field(3, ge=1)
    copy_steps: int = Field(0, ge=0)
    """Steps on copy rows alone (sft.copy_rows) from the fresh initialisation, before any episode: 2,000 form
    induction heads in the tiny shape, which episodes alone never form; 0 (the shipped base) skips the stage.
    Measured in the README: with them the demo did not score higher."""
    copy_batch: int = Field(64, ge=1)
    copy_lr: float = 1e-3
    copy_rows: int = Field(0, ge=0)
    """Copy rows added to every episode step, so the episodes do not overwrite the induction heads."""
    seed: int = 0


RECIPES: dict[str, PretrainRecipe] = {"tiny": PretrainRecipe()}


def recipe_tasks(recipe: PretrainRecipe, domains: tuple[str, ...] | None = None, envs: int | None = None
                 ) -> list[Task]:
    """Basic and multi tier tasks of `domains` (default: the recipe's), from environments sampled with env_seed."""
    tasks: list[Task] = []
    for name in domains or recipe.domains:
        for i, env in enumerate(EnvironmentSampler(load_domain(name), recipe.env_seed).sample_many(
                envs or recipe.envs_per_domain)):
            tasks += tier_tasks(env, "basic", recipe.basic_per_env, recipe.seed * 7919 + i)
            tasks += tier_tasks(env, "multi", recipe.multi_per_env, recipe.seed * 7919 + i)
            env.close()
    return tasks


def pretrain(recipe: PretrainRecipe, out: Path, show_progress: bool = True) -> dict[str, float | int | str]:
    """Run the recipe into `out` (a transformers checkpoint plus pretrain.json with its figures); returns them."""
    out = Path(out)
    start = time.perf_counter()
    tasks = recipe_tasks(recipe)
    vocabulary = recipe_tasks(recipe, tuple(builtin_names()), envs=4)
    build_tiny_model(corpus_from_tasks(tasks + vocabulary), out / "init", recipe.vocab_size, recipe.hidden_size,
                     recipe.layers, recipe.heads, recipe.max_positions, seed=recipe.seed)
    copied = _copy_stage(recipe, out / "init", out / "copy_metrics.jsonl", show_progress)
    examples = list(sft_examples(tasks, recipe.seed, variants=recipe.variants, plan_p=0.0))
    metrics = train_sft(out / "init", examples, out, SFTConfig(
        max_steps=recipe.steps, lr=recipe.lr, batch_size=recipe.batch_size, warmup_steps=30,
        context_loss_weight=recipe.context_loss_weight, copy_rows=recipe.copy_rows, seed=recipe.seed),
        show_progress=show_progress)
    last = metrics[-20:]
    figures: dict[str, float | int | str] = {
        "recipe": recipe.model_dump_json(), "tasks": len(tasks), "examples": len(examples), "steps": len(metrics),
        "first_loss": metrics[0]["loss"], "final_loss": sum(m["loss"] for m in last) / len(last),
        "tokens": sum(m["tokens"] for m in metrics), "wall_seconds": time.perf_counter() - start}
    if copied is not None:
        figures["copy_accuracy_before_episodes"] = copied
    if recipe.copy_rows:
        figures["copy_accuracy_final"] = sum(m["copy_accuracy"] for m in last) / len(last)
    (out / "pretrain.json").write_text(json.dumps(figures, indent=2))
    (out / "sft_metrics.jsonl").replace(out / "pretrain_metrics.jsonl")
    shutil.rmtree(out / "init")
    return figures


def _copy_stage(recipe: PretrainRecipe, model_dir: Path, metrics_path: Path, show_progress: bool) -> float | None:
    """Train the checkpoint in `model_dir` in place on copy rows alone, its per-step metrics to `metrics_path`; the
    copy accuracy of its last 20 steps (None when the recipe has no copy stage)."""
    if recipe.copy_steps == 0:
        return None
    torch.manual_seed(recipe.seed)
    model = load_causal_lm(model_dir)
    metrics = train_copy_rows(model, CopyRowSpec(model.config.vocab_size), recipe.copy_steps, recipe.copy_batch,
                              recipe.copy_lr, recipe.seed, show_progress=show_progress)
    with quiet_transformers():
        model.save_pretrained(model_dir)
    metrics_path.write_text("".join(json.dumps(m) + "\n" for m in metrics))
    last = metrics[-20:]
    return sum(m["copy_accuracy"] for m in last) / len(last)
