"""RL moves a policy the right way: the real Trainer, SampleQueue and RolloutManager (async, local runtime) train a
tiny model built from scratch on a task it can only solve by reading the instruction.

The switchboard domain has four buttons (tools `red`, `green`, `blue`, `gold`); each task asks for one of them and
passes only if that button and no other was pressed. A supervised warm-up plays the pretrained model: it teaches the
call format and to read the instruction, with the wrong habit: three times in four it presses the next button round
(red -> green, ...), so it starts at or below chance (1 in 4). Only RL, rewarding the episodes that pressed the
asked-for button, can turn that into the right choice.

Learning is judged by an evaluation of the trained rollout policy with every task weighted alike, not by the reward
of the training rollouts: the dynamic budget gives more groups to tasks whose running pass rate is mid-way, so a
policy that always presses one button (and solves one task in four) can show a rising training reward while its
real pass rate sits at chance. An earlier warm-up (half next button, half random, 6 epochs) never learnt to read
the instruction (the same button probabilities whatever was asked), and RL on it only learnt that one-button habit;
this one (30 epochs) reads it. Rollouts decode without the tool-call grammar, so a decaying call format is scored as
failing rather than propped up by the decoder.

The run streams (async mode: rollouts never wait for the trainer) with a staleness bound of 0, so every trained group
was sampled by the weights being updated, and 6 groups in flight (12 made as many groups go stale as were trained, and
the test slower). Measured pass rate after 30 steps (every task weighted alike, from 0.14-0.21 before): 0.85 / 0.94 /
0.89 / 0.88 at manager seeds 0-3 with other jobs on the machine (12 in flight: 0.91 / 0.95 / 0.91). With staleness 1
(every trained group one version behind, as when rollouts outrun the trainer) the same 30 steps reach 0.50-0.89 over
six seeds (mean 0.74; synchronous GSPO 0.87-0.91): on a problem where one step moves the policy this far, a version of
lag costs about a fifth of the gain, which is why this test bounds staleness at 0 and the learning bench reports the
staleness-1 run beside the synchronous one. The bound asserted is the issue's: at least 0.8.

Checked by hand once each: with the advantage sign flipped the pass rate falls to 0.00 (and the run stalls at step 2,
every group failing alike); with rollouts never receiving the trainer's weights every group is stale and the run stops
after 1 step; with the loss mask shifted one token later the pass rate still reaches 0.78 (the button name sits inside
the run of sampled tokens, so a shift only changes its ends), which is why the test also checks that no trained
token's behaviour logprob disagrees with the trainer's: at staleness 0 every ratio is 1 and the clip fraction 0 at
every step, while the shifted mask clips 36-83% of the sequences.
"""

from __future__ import annotations

import json

import torch

from toolgym.envs.environment import ToolCall
from toolgym.envs.families import replay
from toolgym.policy.hf import HFPolicy
from toolgym.rl.runtime_local import TrainingRun
from toolgym.rl.switchboard import BUTTONS, ONE_BATCH, PRECISION, ROLLOUT, pass_rate, rl_config
from toolgym.rl.trainer import Trainer


def test_switchboard_tasks_are_verified_by_the_button_pressed(switchboard):
    tasks, _ = switchboard
    for task in tasks:
        assert replay(task, task.gold_chain, "Done.").passed
        other = next(b for b in BUTTONS if b != task.gold_chain[0].name)
        assert not replay(task, [ToolCall(name=other)], "Done.").passed
        assert not replay(task, [*task.gold_chain, ToolCall(name=other)], "Done.").passed


def test_async_gspo_learns_the_asked_for_button_from_chance(switchboard, tmp_path, one_thread):
    tasks, warm = switchboard
    torch.manual_seed(0)
    cfg = rl_config(warm, tmp_path / "rl", steps=30, max_wait_seconds=20, max_staleness=0, inflight_groups=6)
    trainer = Trainer(cfg.model, cfg.trainer)
    policy = HFPolicy(warm, constrain="none", precision=PRECISION, max_batch_tokens=ONE_BATCH)
    before = pass_rate(policy, tasks, 32, ROLLOUT)
    run = TrainingRun(cfg, tasks, policy, trainer, show_progress=False)
    summary = run.run()
    assert summary.steps == cfg.steps, summary.stopped_reason
    assert policy.version == trainer.version == summary.steps, "rollouts never received the trainer's weights"
    steps = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    clipped = [round(s["clip_fraction"], 3) for s in steps]
    assert max(clipped) < 0.01, f"trained tokens disagree with the logprobs they were sampled with: clip {clipped}"
    after = pass_rate(policy, tasks, 32, ROLLOUT)
    assert before < 0.35, f"the warm-up should leave the policy at or below chance, got {before:.2f}"
    assert after >= 0.8, f"pass rate {before:.2f} before RL, {after:.2f} after"
