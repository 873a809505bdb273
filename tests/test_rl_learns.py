"""RL moves a policy the right way: the real Trainer, SampleQueue and RolloutManager (async, local runtime) train a
tiny model built from scratch on a task it can only solve by reading the instruction.

The switchboard domain has four buttons (tools `red`, `green`, `blue`, `gold`); each task asks for one of them and
passes only if that button and no other was pressed. A short supervised warm-up plays the pretrained model: it
teaches the call format and to read the instruction, but with the wrong habit: half the time it presses the next
button round (red -> green, ...), otherwise a random one, so it starts below chance (about 1 in 8). Only RL,
rewarding the episodes that pressed the asked-for button, can turn that into the right choice.

Rollouts decode without the tool-call grammar, so a policy whose call format decays is scored as failing instead of
being propped up by the decoder, and the learning rate (2e-3) is one at which the tiny model improves steadily:
at 1e-2 Adam's first steps wreck it within two updates, which the grammar hides until every button's groups fail
alike and the run stalls. Measured over five runs of these settings (manager seeds 0, 1, 20, 21, 22): rollout reward
0.10-0.14 over the first 3 steps, 0.41-0.52 over the last 3 of 50; the bound asserted is a rise of at least 0.15 to
at least 0.33. A run may also end early once every group's rewards are equal (a converged policy leaves no signal);
the reward bounds still apply to it.

This fails if the advantage sign is flipped (reward falls), if the loss mask is off by one token (the update trains
the tokens around the button name, not the name itself) or if rollouts never receive the trainer's weights (groups
then go stale and the reward stays put).
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import pytest
import torch

from toolgym.agent.rollout import RolloutConfig
from toolgym.domains import load_domain
from toolgym.envs.environment import Environment, ToolCall
from toolgym.policy.base import SamplingParams
from toolgym.policy.hf import HFPolicy
from toolgym.agent.toolcall import format_tool_call
from toolgym.policy.chat_format import render
from toolgym.policy.tiny import build_tiny_model
from toolgym.rl.config import RLConfig, TrainerConfig
from toolgym.rl.manager import ManagerConfig
from toolgym.rl.runtime_local import TrainingRun
from toolgym.rl.trainer import Trainer
from toolgym.sft.data import SFTExample
from toolgym.sft.trainer import SFTConfig, train_sft
from toolgym.tasks.model import Difficulty, Task, UserProfile
from toolgym.envs.families import replay

SPEC = Path(__file__).parent / "data" / "switchboard.yaml"
BUTTONS = ["red", "green", "blue", "gold"]


def button_task(env: Environment, button: str) -> Task:
    """A task whose only passing trajectory presses `button` once (expected state from running the gold call)."""
    work = env.fork()
    before = work.snapshot()
    work.call(button, {})
    changes = work.diff_from(before)
    final_hash = work.state_hash()
    work.close()
    return Task(id=f"press-{button}", domain=env.domain.name, seed=0, env=env.record(),
                instruction=f"Please press the {button} button.", user=UserProfile(),
                gold_chain=[ToolCall(name=button)], expected_changes=changes, expected_state_hash=final_hash,
                required_answers=[], difficulty=Difficulty(chain_length=1, n_writes=1, n_env_tools=4, n_targets=1))


def habit_example(task: Task, tools: list[dict], rng: random.Random) -> SFTExample:
    """One warm-up conversation: the call presses the next button round half the time, otherwise a random one."""
    asked = task.gold_chain[0].name
    pressed = BUTTONS[(BUTTONS.index(asked) + 1) % 4] if rng.random() < 0.5 else rng.choice(BUTTONS)
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": task.instruction},
                {"role": "assistant", "content": format_tool_call(ToolCall(name=pressed))},
                {"role": "tool", "content": '{"ok": true}'}, {"role": "assistant", "content": "Done."}]
    return SFTExample(task_id=task.id, domain=task.domain, messages=messages, tools=tools, train=[True, True])


def warm_switchboard(root: Path, repeats: int) -> tuple[list[Task], Path]:
    """(the four button tasks, a warmed-up model dir under `root`): a model built from scratch, then fine-tuned on
    `repeats` habit conversations per button, so it writes well-formed calls, mostly wrong ones."""
    env = Environment(load_domain(str(SPEC)), BUTTONS, env_id="switchboard")
    tasks = [button_task(env, b) for b in BUTTONS]
    tools = env.openai_tools()
    env.close()
    rng = random.Random(0)
    habits = [habit_example(t, tools, rng) for t in tasks * repeats]
    tiny = build_tiny_model([render(e.messages, tools) for e in habits], root / "tiny", vocab_size=400,
                            hidden_size=64, num_layers=2, num_heads=4, max_position_embeddings=512, seed=0)
    train_sft(tiny, habits, root / "warm", SFTConfig(epochs=6, lr=3e-3, batch_size=16, warmup_steps=5),
              show_progress=False)
    return tasks, root / "warm"


@pytest.fixture(scope="module")
def switchboard(tmp_path_factory, one_thread):
    """(tasks, warmed-up model dir) with 64 habit conversations per button."""
    return warm_switchboard(tmp_path_factory.mktemp("switchboard"), repeats=64)


def test_switchboard_tasks_are_verified_by_the_button_pressed(switchboard):
    tasks, _ = switchboard
    for task in tasks:
        assert replay(task, task.gold_chain, "Done.").passed
        other = next(b for b in BUTTONS if b != task.gold_chain[0].name)
        assert not replay(task, [ToolCall(name=other)], "Done.").passed
        assert not replay(task, [*task.gold_chain, ToolCall(name=other)], "Done.").passed


def test_async_gspo_learns_the_asked_for_button_from_chance(switchboard, tmp_path):
    tasks, warm = switchboard
    torch.manual_seed(0)
    cfg = RLConfig(model=str(warm), tasks="in-memory", out=str(tmp_path / "rl"), steps=50, groups_per_step=16,
                   max_staleness=1, checkpoint_every=0, curriculum=False, max_wait_seconds=20,
                   manager=ManagerConfig(group_size=8, inflight_groups=12, seed=0),
                   trainer=TrainerConfig(algorithm="gspo", lr=2e-3, eps_low=0.2, eps_high=0.2),
                   rollout=RolloutConfig(max_turns=1, system_prompt="",
                                         sampling=SamplingParams(temperature=1.0, max_new_tokens=24)))
    trainer = Trainer(cfg.model, cfg.trainer)
    policy = HFPolicy(warm, constrain="none")
    run = TrainingRun(cfg, tasks, policy, trainer, show_progress=False)
    trainer.publish = run.policy.set_weights
    summary = run.run()
    rows = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    curve = [r["rollout_reward"] for r in rows]
    assert summary.steps == cfg.steps or "equal rewards" in summary.stopped_reason, summary.stopped_reason
    assert policy.version == trainer.version == summary.steps, "rollouts never received the trainer's weights"
    first, last = statistics.mean(curve[:3]), statistics.mean(curve[-3:])
    assert first < 0.25, f"the warm-up should leave the policy below chance; rollout reward per step {curve}"
    assert last >= 0.33 and last - first >= 0.15, f"rollout reward per step {curve}"
