"""The switchboard: the smallest check that an RL setup learns, used by the RL learning test and the learning bench.

Four buttons (tools `red`, `green`, `blue`, `gold`); each task asks for one and passes only if that button and no
other was pressed. `warm_switchboard` builds a tiny model from scratch and fine-tunes it on conversations with a
wrong habit (it presses the asked button one time in four, else the next one round), so it writes well-formed calls,
reads the instruction, and starts at or below chance: only RL, rewarding the right button, can fix the habit.
`pass_rate` weights every task alike, so a policy that always presses one button scores chance whatever share of
the training groups that button's task got.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from toolgym.agent.rollout import Episode, RolloutConfig, run_episodes
from toolgym.agent.toolcall import format_tool_call
from toolgym.domains import load_domain
from toolgym.envs.environment import Environment, ToolCall
from toolgym.envs.families import open_env
from toolgym.policy.base import Policy, SamplingParams
from toolgym.policy.chat_format import render
from toolgym.policy.hf import load_causal_lm, load_tokenizer
from toolgym.policy.tiny import build_tiny_model
from toolgym.rl.config import RLConfig, TrainerConfig
from toolgym.rl.manager import ManagerConfig
from toolgym.sft.data import SFTExample
from toolgym.rl.trainer import token_logprobs
from toolgym.sft.trainer import SFTConfig, collate, tokenize_example, train_sft
from toolgym.tasks.model import Difficulty, Task, UserProfile

SPEC = Path(__file__).with_name("switchboard.yaml")
BUTTONS = ("red", "green", "blue", "gold")
ROLLOUT = RolloutConfig(max_turns=1, system_prompt="", sampling=SamplingParams(temperature=1.0, max_new_tokens=24))
"""One call per episode, sampled at temperature 1 (the policy decodes without the tool-call grammar)."""


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


def press_example(task: Task, tools: list[dict], button: str) -> SFTExample:
    """The conversation in which `task`'s instruction is answered by pressing `button`."""
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": task.instruction},
                {"role": "assistant", "content": format_tool_call(ToolCall(name=button))},
                {"role": "tool", "content": '{"ok": true}'}, {"role": "assistant", "content": "Done."}]
    return SFTExample(task_id=task.id, domain=task.domain, messages=messages, tools=tools, train=[True, True])


def habit_example(task: Task, tools: list[dict], rng: random.Random, right_share: float = 0.25) -> SFTExample:
    """One warm-up conversation: the call presses the asked-for button `right_share` of the time (the habit: one
    time in four), else the next one round."""
    asked = task.gold_chain[0].name
    return press_example(task, tools, asked if rng.random() < right_share
                         else BUTTONS[(BUTTONS.index(asked) + 1) % len(BUTTONS)])


def switchboard_tools() -> list[dict]:
    """The four buttons as OpenAI tools."""
    env = Environment(load_domain(str(SPEC)), list(BUTTONS), env_id="switchboard")
    tools = env.openai_tools()
    env.close()
    return tools


def choice_probabilities(model_dir: str | Path, tasks: list[Task]) -> list[float]:
    """Per task, the probability the model gives the asked-for button's call, normalised over the four buttons'
    calls: an exact, noise-free read of which button a policy would press (sampled pass rates need many trials)."""
    tokenizer, model, tools = load_tokenizer(model_dir), load_causal_lm(model_dir).eval(), switchboard_tools()
    probabilities = []
    for task in tasks:
        calls = [press_example(task, tools, b).model_copy(update={"train": [True, False]}) for b in BUTTONS]
        rows = [tokenize_example(tokenizer, call) for call in calls]
        batch = collate(rows, tokenizer.pad_token_id)
        with torch.no_grad():
            scores = (token_logprobs(model, batch["input_ids"], batch["attention_mask"])
                      * batch["loss_mask"][:, 1:]).sum(-1)
        probabilities.append(scores.softmax(-1)[BUTTONS.index(task.gold_chain[0].name)].item())
    return probabilities


def warm_switchboard(root: Path, repeats: int, epochs: int, seed: int = 0,
                     num_heads: int = 4) -> tuple[list[Task], Path]:
    """(the four button tasks, a warmed-up model dir under `root`): a model built from scratch, then fine-tuned on
    `repeats` habit conversations per button for `epochs` epochs (30 with 64 repeats: enough to read the button).
    The model is 64 wide with `num_heads` attention heads (vLLM's CPU attention needs heads of 32 or wider: 2)."""
    env = Environment(load_domain(str(SPEC)), list(BUTTONS), env_id="switchboard")
    tasks = [button_task(env, b) for b in BUTTONS]
    tools = env.openai_tools()
    env.close()
    rng = random.Random(seed)
    habits = [habit_example(t, tools, rng) for t in tasks * repeats]
    tiny = build_tiny_model([render(e.messages, tools) for e in habits], root / "tiny", vocab_size=400,
                            hidden_size=64, num_layers=2, num_heads=num_heads, max_position_embeddings=512, seed=seed)
    train_sft(tiny, habits, root / "warm", SFTConfig(epochs=epochs, lr=3e-3, batch_size=16, warmup_steps=5,
                                                     seed=seed), show_progress=False)
    return tasks, root / "warm"


def pass_rate(policy: Policy, tasks: list[Task], trials: int, rollout: RolloutConfig) -> float:
    """Pass rate over `trials` episodes of every task (each task weighted alike)."""
    episodes = [Episode(task=t, env=open_env(t.env), trial=i) for t in tasks for i in range(trials)]
    trajectories = run_episodes(episodes, policy, rollout)
    return sum(t.passed for t in trajectories) / len(trajectories)


def rl_config(warm: Path, out: Path, steps: int, mode: str = "async", max_wait_seconds: float = 60.0,
              max_staleness: int = 1, inflight_groups: int = 12) -> RLConfig:
    """The GSPO run that trains the switchboard from `warm`: 16 groups x 8 rollouts a step, staleness at most
    `max_staleness`, `inflight_groups` groups rolling out at once, lr 2e-3, clip 0.2, no curriculum (every task from
    the start)."""
    return RLConfig(model=str(warm), tasks="in-memory", out=str(out), mode=mode, steps=steps, groups_per_step=16,
                    max_staleness=max_staleness, checkpoint_every=0, curriculum=False,
                    max_wait_seconds=max_wait_seconds,
                    manager=ManagerConfig(group_size=8, inflight_groups=inflight_groups, seed=0),
                    trainer=TrainerConfig(algorithm="gspo", lr=2e-3, eps_low=0.2, eps_high=0.2), rollout=ROLLOUT)
