"""RL trainer throughput: toolgym's Trainer (GSPO) beside TRL's GRPOTrainer with importance_sampling_level="sequence"
(TRL's GSPO), both optimizing the same tiny model on the same fixed batch, in trained tokens per second.

The batch: GROUPS prompts x GROUP_SIZE completions of seeded random token ids (lengths drawn once, so rows differ and
both sides pay for padding), behaviour logprobs from one no-grad pass of the initial model, seeded rewards. Both sides
start from the shipped base checkpoint (toolgym.assets.TINY_BASE, Qwen2 h128 x 4 layers, vocab 4000), run on the CPU
in this process with one torch thread by default (steadier on a shared machine), and use the same settings:
micro-batches of MICRO_BATCH rows with gradient accumulation to one optimizer step per batch, AdamW
(torch.optim.AdamW, weight decay 0, constant lr), gradient clipping at 1.0, GSPO clip range eps_low 3e-4 /
eps_high 4e-4, no KL term, no gradient checkpointing, fp32. Neither side runs an extra forward pass for pi_old:
toolgym reads the stored behaviour logprobs, TRL (one iteration per generation batch, on-policy) detaches its own.
How each pads is its own and part of what is measured: toolgym pads each micro-batch to its longest row, TRL pads the
whole batch once (prompts left, completions right) and also computes per-token entropies for its metrics.

What each side times, per optimizer step (the median of STEPS steps after WARMUP untimed ones; a toolgym step runs
right after each TRL step, outside TRL's timed window, so both see the same load on a shared machine):
- toolgym: one `Trainer.step(groups)` call: advantages, padding rows into tensors, forward, GSPO loss, backward per
  micro-batch, gradient clipping and the AdamW step (no weight publishing: `publish` is None).
- TRL: `trainer.train()` runs with a `rollout_func` stub that returns the fixed prompt and completion ids and
  logprobs, and a reward function that returns the fixed rewards. A callback times each step from `on_step_begin` to
  `on_step_end` (its training_step calls, forward, loss, backward, clipping, optimizer and scheduler step, zero_grad);
  the time spent inside `_generate_and_score_completions` during that step (the stub, decoding the completions,
  the reward call, advantages and padding into tensors) is measured by wrapping that method and subtracted.
  The data loader fetch before a step and TRL's logging after it are outside the window.
Trained tokens per step are the prompt + completion tokens of the batch without padding, the same count for both
sides; the ratio toolgym / TRL above 1 means toolgym's trainer is faster on this batch.
"""

from __future__ import annotations

import importlib.util
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from toolgym.agent.trajectory import TokenSegment, Trajectory
from toolgym.assets import TINY_BASE
from toolgym.rl.config import TrainerConfig
from toolgym.rl.queue import SampleGroup
from toolgym.policy.logprobs import token_logprobs
from toolgym.rl.trainer import Trainer

GROUPS = 4
GROUP_SIZE = 8
MICRO_BATCH = 8
PROMPT_TOKENS = (48, 128)  # inclusive range of prompt lengths
COMPLETION_TOKENS = (16, 96)  # inclusive range of completion lengths
WARMUP = 2
STEPS = 6
LR = 1e-5
EPS_LOW, EPS_HIGH = 3e-4, 4e-4
MAX_GRAD_NORM = 1.0
SEED = 0
FIRST_ID = 16  # token ids below this are left out of the random text (the tiny tokenizer's special tokens)
TRL_INSTALL = 'pip install -e ".[bench]"  (or: pip install "trl>=1.16,<2")'


@dataclass(frozen=True)
class FixedBatch:
    """One RL batch both trainers train on: per group a prompt and GROUP_SIZE completions with behaviour logprobs."""

    prompts: list[list[int]]
    completions: list[list[list[int]]]
    logprobs: list[list[list[float]]]
    rewards: list[list[float]]

    @property
    def trained_tokens(self) -> int:
        """Prompt + completion tokens of every row, padding excluded."""
        return sum(len(p) + len(c) for p, group in zip(self.prompts, self.completions) for c in group)

    @property
    def completion_tokens(self) -> int:
        """Tokens the loss covers (the completions)."""
        return sum(len(c) for group in self.completions for c in group)


def fixed_batch(model_dir: Path, seed: int = SEED) -> FixedBatch:
    """Seeded random prompts, completions and rewards, with the initial model's logprobs of each completion."""
    rng = random.Random(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    vocab = model.config.vocab_size
    prompts, completions, logprobs, rewards = [], [], [], []
    for _ in range(GROUPS):
        prompt = [rng.randrange(FIRST_ID, vocab) for _ in range(rng.randint(*PROMPT_TOKENS))]
        group = [[rng.randrange(FIRST_ID, vocab) for _ in range(rng.randint(*COMPLETION_TOKENS))]
                 for _ in range(GROUP_SIZE)]
        with torch.no_grad():
            group_logprobs = [token_logprobs(model, torch.tensor([prompt + c]), torch.ones(1, len(prompt) + len(c),
                                             dtype=torch.long))[0, len(prompt) - 1:].tolist() for c in group]
        prompts.append(prompt)
        completions.append(group)
        logprobs.append(group_logprobs)
        rewards.append([rng.random() for _ in range(GROUP_SIZE)])
    return FixedBatch(prompts, completions, logprobs, rewards)


def sample_groups(batch: FixedBatch) -> list[SampleGroup]:
    """The batch as toolgym SampleGroups: one segment per trajectory, loss mask 1 exactly on the completion."""
    groups = []
    for g, (prompt, group) in enumerate(zip(batch.prompts, batch.completions)):
        trajectories = []
        for completion, lps, reward in zip(group, batch.logprobs[g], batch.rewards[g]):
            segment = TokenSegment()
            segment.extend(prompt, trainable=False)
            segment.extend(completion, trainable=True, logprobs=lps, version=0)
            trajectories.append(Trajectory(task_id=f"group-{g}", domain="bench", segments=[segment], reward=reward))
        groups.append(SampleGroup(group_id=f"group-{g}", task_id=f"group-{g}", domain="bench",
                                  trajectories=trajectories))
    return groups


class ToolgymStepper:
    """toolgym's Trainer (GSPO) on the fixed batch; `timed_step()` runs one optimizer step and returns its seconds."""

    def __init__(self, batch: FixedBatch, model_dir: Path):
        cfg = TrainerConfig(algorithm="gspo", lr=LR, eps_low=EPS_LOW, eps_high=EPS_HIGH, micro_batch=MICRO_BATCH,
                            max_grad_norm=MAX_GRAD_NORM, weight_decay=0.0, device="cpu")
        self.trainer = Trainer(model_dir, cfg)
        self.groups = sample_groups(batch)

    def timed_step(self) -> float:
        """Seconds of one `Trainer.step` over the whole batch."""
        start = time.perf_counter()
        self.trainer.step(self.groups)
        return time.perf_counter() - start


def fixed_rollout(batch: FixedBatch) -> Callable[[list[str], Any], dict[str, list]]:
    """A TRL rollout_func that generates nothing: the k-th occurrence of prompt "group-g" in a call gets completion k
    of group g, with its ids, behaviour logprobs and reward (an extra field the reward function reads back)."""

    def rollout(prompts: list[str], trainer: Any) -> dict[str, list]:
        seen: dict[int, int] = {}
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "fixed_reward": []}
        for prompt in prompts:
            g = int(prompt.removeprefix("group-"))
            k = seen[g] = seen.get(g, -1) + 1
            out["prompt_ids"].append(batch.prompts[g])
            out["completion_ids"].append(batch.completions[g][k])
            out["logprobs"].append(batch.logprobs[g][k])
            out["fixed_reward"].append(batch.rewards[g][k])
        return out

    return rollout


def reward_from_batch(prompts: list[str], completions: list[str], fixed_reward: list[float], **_: Any) -> list[float]:
    """The batch's reward for each completion, handed through by the rollout stub."""
    return fixed_reward


def trl_step_seconds(batch: FixedBatch, model_dir: Path, between_steps: Callable[[], None]) -> list[float]:
    """Seconds of each of WARMUP + STEPS GRPOTrainer optimizer steps (GSPO), minus their time inside
    _generate_and_score_completions; `between_steps` runs after each step, outside the timed window."""
    from datasets import Dataset
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class StepClock(TrainerCallback):
        """Wall time of each optimizer step, from on_step_begin to on_step_end, less the time spent generating."""

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.generation = 0.0
            self._start = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.generation = 0.0
            self._start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.seconds.append(time.perf_counter() - self._start - self.generation)
            between_steps()

    clock = StepClock()
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*rollout_func.*experimental")
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*deprecated")
        args = GRPOConfig(
            output_dir=out, max_steps=WARMUP + STEPS, per_device_train_batch_size=MICRO_BATCH,
            gradient_accumulation_steps=GROUPS * GROUP_SIZE // MICRO_BATCH, num_generations=GROUP_SIZE,
            max_completion_length=COMPLETION_TOKENS[1], importance_sampling_level="sequence", loss_type="grpo",
            beta=0.0, epsilon=EPS_LOW, epsilon_high=EPS_HIGH, learning_rate=LR, lr_scheduler_type="constant",
            optim="adamw_torch", weight_decay=0.0, max_grad_norm=MAX_GRAD_NORM, activation_checkpointing=False,
            bf16=False, use_cpu=True, mask_truncated_completions=False, report_to="none", save_strategy="no",
            logging_steps=WARMUP + STEPS, disable_tqdm=True, seed=SEED, dataloader_num_workers=0)
        trainer = GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=reward_from_batch, args=args,
            train_dataset=Dataset.from_dict({"prompt": [f"group-{g}" for g in range(GROUPS)]}),
            processing_class=AutoTokenizer.from_pretrained(model_dir), rollout_func=fixed_rollout(batch),
            callbacks=[clock])
        for quiet in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(quiet)
        generate = trainer._generate_and_score_completions

        def timed_generate(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return generate(*a, **kw)
            finally:
                clock.generation += time.perf_counter() - start

        trainer._generate_and_score_completions = timed_generate
        trainer.train()
    return clock.seconds


def _report(name: str, seconds: list[float], tokens: int) -> float:
    """Print one side's median step time and tokens/s over the timed steps; return tokens/s."""
    median = statistics.median(seconds)
    print(f"  {name:<34s} {median * 1e3:7.1f} ms/step (min {min(seconds) * 1e3:.1f}, max {max(seconds) * 1e3:.1f}), "
          f"{tokens / median:8.0f} trained tokens/s")
    return tokens / median


def run(threads: int = 1) -> dict[str, float]:
    """Print tokens/s of toolgym's GSPO trainer and TRL's GRPOTrainer (sequence level) and their ratio. threads > 0
    sets torch's CPU threads for the run (1 by default: steadier on a shared machine); 0 keeps torch's default."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run()
    finally:
        torch.set_num_threads(previous)


def _run() -> dict[str, float]:
    batch = fixed_batch(TINY_BASE)
    print(f"RL trainer benchmark: toolgym Trainer (GSPO) vs TRL GRPOTrainer (importance_sampling_level='sequence'), "
          f"shipped tiny base ({TINY_BASE.name}), CPU, {torch.get_num_threads()} torch threads")
    print(f"  settings: {GROUPS} groups x {GROUP_SIZE} completions, micro-batch {MICRO_BATCH}, prompts "
          f"{PROMPT_TOKENS[0]}-{PROMPT_TOKENS[1]} tokens, completions {COMPLETION_TOKENS[0]}-{COMPLETION_TOKENS[1]}; "
          f"{batch.trained_tokens} trained tokens ({batch.completion_tokens} in the loss) per step; lr {LR:g}, "
          f"eps {EPS_LOW:g}/{EPS_HIGH:g}; median of {STEPS} steps after {WARMUP} warm-up")
    toolgym = ToolgymStepper(batch, TINY_BASE)
    toolgym_seconds: list[float] = []
    has_trl = importlib.util.find_spec("trl") is not None
    if has_trl:
        trl_seconds = trl_step_seconds(batch, TINY_BASE, lambda: toolgym_seconds.append(toolgym.timed_step()))
    else:
        toolgym_seconds = [toolgym.timed_step() for _ in range(WARMUP + STEPS)]
    result = {"toolgym_tokens_per_s": _report("toolgym Trainer.step", toolgym_seconds[WARMUP:], batch.trained_tokens)}
    if not has_trl:
        print(f"  TRL is not installed, so there is no TRL figure to compare; install it with {TRL_INSTALL}")
        return result
    import trl

    result["trl_tokens_per_s"] = _report(f"TRL {trl.__version__} GRPOTrainer step", trl_seconds[WARMUP:],
                                         batch.trained_tokens)
    result["ratio"] = result["toolgym_tokens_per_s"] / result["trl_tokens_per_s"]
    print(f"  toolgym / TRL trained tokens/s: {result['ratio']:.2f}x (steps interleaved, so both saw the same load)")
    return result


if __name__ == "__main__":
    run()
