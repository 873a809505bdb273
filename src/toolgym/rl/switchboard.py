"""The switchboard: the smallest check that an RL setup learns, used by the RL learning test and the learning bench.

Four buttons (tools `red`, `green`, `blue`, `gold`); each task asks for one and passes only if that button and no
other was pressed. `warm_switchboard` builds a tiny model from scratch and fine-tunes it on conversations with a
wrong habit (it presses the asked button one time in four, else the next one round), so it writes well-formed calls,
reads the instruction, and starts at or below chance: only RL, rewarding the right button, can fix the habit.
`pass_rate` weights every task alike, so a policy that always presses one button scores chance whatever share of
the training groups that button's task got.

The same board checks the two judging tasks RL can train (`warm_judges`): Heavy Thinking's summary stage choosing
between a candidate that pressed the asked button and one that pressed nothing (`choice_cases`, heavy.summary_rl),
and self-verification saying whether an episode that pressed the asked button or nothing satisfied the request
(`pressed_episode`, rl.self_verify). Their warm-ups have the same kind of wrong habit (the right choice or verdict
one time in four), so the model reads the prompt but starts below chance, and `judge_probabilities` reads exactly
how often it would be right.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from toolgym.agent.rollout import Episode, RolloutConfig, run_episodes
from toolgym.agent.toolcall import format_tool_call
from toolgym.agent.trajectory import Trajectory
from toolgym.domains import load_domain
from toolgym.envs.environment import Environment, ToolCall
from toolgym.envs.families import open_env
from toolgym.heavy.agentic import (
    CHOICE_TOOL,
    AgenticHeavyConfig,
    Candidate,
    CandidateStep,
    choice_tool,
    summary_messages,
)
from toolgym.heavy.summary_rl import SummaryCase
from toolgym.policy.base import Policy, SamplingParams
from toolgym.policy.chat_format import render
from toolgym.policy.hf import load_causal_lm, load_tokenizer
from toolgym.policy.tiny import build_tiny_model
from toolgym.rl.config import RLConfig, TrainerConfig
from toolgym.rl.manager import ManagerConfig
from toolgym.rl.self_verify import VERDICT_TOOLS, VERDICT_TOOL, verification_messages
from toolgym.sft.data import SFTExample
from toolgym.policy.logprobs import token_logprobs
from toolgym.sft.trainer import SFTConfig, collate, tokenize_example, train_sft
from toolgym.tasks.model import Difficulty, Task, UserProfile

SPEC = Path(__file__).with_name("switchboard.yaml")
BUTTONS = ("red", "green", "blue", "gold")
ROLLOUT = RolloutConfig(max_turns=1, system_prompt="", sampling=SamplingParams(temperature=1.0, max_new_tokens=24))
"""One call per episode, sampled at temperature 1 (the policy decodes without the tool-call grammar)."""
PRECISION = "fp32"
"""The toys warm up, sample and train in fp32: their figures were measured so, and in fp32 the sampler's logprobs
match the trainer's to 1e-5, so a clip fraction above 0 exposes a misaligned loss mask (bf16 would recompute pi_old
and hide it). Build their HFPolicy with `precision=PRECISION` too."""
ONE_BATCH = 1 << 30
"""The toys' token budget: no split into micro-batches, so each step computes exactly as when their figures were
measured (their RL outcome is chaotic: reordering rows within a step flipped the summary toy from 0.94 to a
collapse onto one candidate)."""
CHOICE_CONFIG = AgenticHeavyConfig(k=2, choice_tool=True)
"""The summary stage of the choice cases: two candidates, answered by a choose_candidate call."""


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


def switchboard_tasks() -> tuple[list[Task], list[dict]]:
    """(the four button tasks, the four buttons as OpenAI tools)."""
    env = Environment(load_domain(str(SPEC)), list(BUTTONS), env_id="switchboard")
    tasks, tools = [button_task(env, b) for b in BUTTONS], env.openai_tools()
    env.close()
    return tasks, tools


def switchboard_tools() -> list[dict]:
    """The four buttons as OpenAI tools."""
    return switchboard_tasks()[1]


def reply_probabilities(model: Any, tokenizer: Any, examples: list[SFTExample]) -> torch.Tensor:
    """The probability the model gives each example's trained replies, normalised over the examples (conversations
    that differ only in their replies): an exact, noise-free read of which one a policy would write."""
    batch = collate([tokenize_example(tokenizer, e) for e in examples], tokenizer.pad_token_id)
    with torch.no_grad():
        scores = (token_logprobs(model, batch["input_ids"], batch["attention_mask"]) * batch["loss_mask"][:, 1:]).sum(-1)
    return scores.softmax(-1)


def choice_probabilities(model_dir: str | Path, tasks: list[Task]) -> list[float]:
    """Per task, the probability the model gives the asked-for button's call, normalised over the four buttons'
    calls (`reply_probabilities`; sampled pass rates need many trials)."""
    tokenizer, model, tools = load_tokenizer(model_dir), load_causal_lm(model_dir).eval(), switchboard_tools()
    return [reply_probabilities(model, tokenizer, [press_example(task, tools, b).model_copy(
                update={"train": [True, False]}) for b in BUTTONS])[BUTTONS.index(task.gold_chain[0].name)].item()
            for task in tasks]


def button_candidate(index: int, task: Task, pressed: bool) -> Candidate:
    """A Heavy Thinking candidate that pressed `task`'s asked button once (it passes) or nothing (it fails), then
    said "Done."."""
    button = task.gold_chain[0].name
    trajectory = Trajectory(task_id=task.id, domain=task.domain, final_answer="Done.", passed=pressed,
                            termination="answer")
    steps = [CandidateStep(kind="call", call=ToolCall(name=button), text='{"ok": true}')] if pressed else []
    return Candidate(index=index, trajectory=trajectory, state_hash=button if pressed else "unchanged", steps=steps)


def choice_cases(tasks: list[Task]) -> list[SummaryCase]:
    """Per task and order: two candidates, one pressed the asked button (it passes) and one pressed nothing (8 cases).
    The choice follows from which block shows a call: a warm-up this small never learnt to compare candidates'
    buttons with the asked one (1,200 steps left every choice at 0.50)."""
    cases = []
    for task in tasks:
        for order in ((True, False), (False, True)):
            case_task = task.model_copy(update={"id": f"{task.id}-{'first' if order[0] else 'second'}"})
            cases.append(SummaryCase(task=case_task, candidates=[button_candidate(i, case_task, pressed)
                                                                 for i, pressed in enumerate(order, 1)]))
    return cases


def choice_example(case: SummaryCase, right: bool) -> SFTExample:
    """The summary conversation of `case` answered by choosing the passing candidate (`right`) or the other one."""
    ep = Episode(task=case.task, env=open_env(case.task.env))
    messages = summary_messages(ep, case.candidates, CHOICE_CONFIG, ROLLOUT)
    ep.env.close()
    chosen = next(c.index for c in case.candidates if c.passed == right)
    call = ToolCall(name=CHOICE_TOOL, arguments={"candidate": chosen})
    return SFTExample(task_id=case.task.id, domain=case.task.domain, tools=[choice_tool(len(case.candidates))],
                      messages=[*messages, {"role": "assistant", "content": format_tool_call(call)}], train=[True])


def skip_example(task: Task, tools: list[dict]) -> SFTExample:
    """The conversation in which `task`'s instruction is answered "Done." without pressing anything (it fails)."""
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": task.instruction},
                {"role": "assistant", "content": "Done."}]
    return SFTExample(task_id=task.id, domain=task.domain, messages=messages, tools=tools, train=[True])


def pressed_episode(task: Task, pressed: bool) -> Trajectory:
    """The episode in which `task`'s asked button was pressed (it passes) or nothing was (it fails)."""
    example = press_example(task, [], task.gold_chain[0].name) if pressed else skip_example(task, [])
    return Trajectory(task_id=task.id, domain=task.domain, messages=example.messages, final_answer="Done.",
                      passed=pressed, reward=float(pressed))


def verdict_call(satisfied: bool) -> ToolCall:
    """The verdict a judge of the switchboard gives; one reason for both verdicts, so that they differ only where
    the decision is (with a reason per verdict, RL runs from the same warm-up ended anywhere from 0.50 to 0.79)."""
    return ToolCall(name=VERDICT_TOOL, arguments={"satisfied": satisfied, "reason": "from the calls"})


def verdict_example(episode: Trajectory, right: bool) -> SFTExample:
    """The judge's conversation about `episode` answered with the right verdict (`right`) or the wrong one."""
    call = verdict_call(episode.passed == right)
    return SFTExample(task_id=episode.task_id, domain=episode.domain, tools=VERDICT_TOOLS, train=[True],
                      messages=[*verification_messages(episode), {"role": "assistant", "content": format_tool_call(call)}])


def choice_pairs(tasks: list[Task]) -> list[tuple[SFTExample, SFTExample]]:
    """(right, wrong) summary conversations of the 8 choice cases."""
    return [(choice_example(c, True), choice_example(c, False)) for c in choice_cases(tasks)]


def verdict_pairs(tasks: list[Task]) -> list[tuple[SFTExample, SFTExample]]:
    """(right, wrong) judge conversations of the 8 episodes that pressed the asked button or nothing."""
    episodes = [pressed_episode(t, pressed) for t in tasks for pressed in (True, False)]
    return [(verdict_example(e, True), verdict_example(e, False)) for e in episodes]


def judge_probabilities(model_dir: str | Path, pairs: list[tuple[SFTExample, SFTExample]]) -> list[float]:
    """Per (right, wrong) pair, the probability the model gives the right reply, normalised over the two."""
    tokenizer, model = load_tokenizer(model_dir), load_causal_lm(model_dir).eval()
    return [reply_probabilities(model, tokenizer, list(pair))[0].item() for pair in pairs]


def warm_judges(root: Path, repeats: int, epochs: int, seed: int = 0) -> tuple[list[Task], Path]:
    """(the four button tasks, a warmed-up judge model dir under `root`): built from scratch, then fine-tuned on
    `repeats` copies of every choice and verdict conversation, each answered rightly one time in four, and of every
    task, answered by pressing the asked button half the time and by pressing nothing otherwise (so the episodes it
    plays, and judges under self-verification, pass or fail visibly)."""
    tasks, tools = switchboard_tasks()
    rng = random.Random(seed)
    pairs = choice_pairs(tasks) + verdict_pairs(tasks)
    habits = [pair[0] if rng.random() < 0.25 else pair[1] for pair in pairs * repeats]
    habits += [press_example(t, tools, t.gold_chain[0].name) if rng.random() < 0.5 else skip_example(t, tools)
               for t in tasks * repeats]
    rng.shuffle(habits)
    tiny = build_tiny_model([render(e.messages, e.tools) for e in habits[:200]], root / "tiny", vocab_size=600,
                            hidden_size=64, num_layers=2, num_heads=4, max_position_embeddings=1024, seed=seed)
    train_sft(tiny, habits, root / "warm", SFTConfig(epochs=epochs, lr=3e-3, batch_size=16, warmup_steps=5,
                                                     seed=seed, precision=PRECISION, micro_batch_tokens=ONE_BATCH),
              show_progress=False)
    return tasks, root / "warm"


def warm_switchboard(root: Path, repeats: int, epochs: int, seed: int = 0,
                     num_heads: int = 4) -> tuple[list[Task], Path]:
    """(the four button tasks, a warmed-up model dir under `root`): a model built from scratch, then fine-tuned on
    `repeats` habit conversations per button for `epochs` epochs (30 with 64 repeats: enough to read the button).
    The model is 64 wide with `num_heads` attention heads (vLLM's CPU attention needs heads of 32 or wider: 2)."""
    tasks, tools = switchboard_tasks()
    rng = random.Random(seed)
    habits = [habit_example(t, tools, rng) for t in tasks * repeats]
    tiny = build_tiny_model([render(e.messages, tools) for e in habits], root / "tiny", vocab_size=400,
                            hidden_size=64, num_layers=2, num_heads=num_heads, max_position_embeddings=512, seed=seed)
    train_sft(tiny, habits, root / "warm", SFTConfig(epochs=epochs, lr=3e-3, batch_size=16, warmup_steps=5,
                                                     seed=seed, precision=PRECISION, micro_batch_tokens=ONE_BATCH),
              show_progress=False)
    return tasks, root / "warm"


def pass_rate(policy: Policy, tasks: list[Task], trials: int, rollout: RolloutConfig) -> float:
    """Pass rate over `trials` episodes of every task (each task weighted alike)."""
    episodes = [Episode(task=t, env=open_env(t.env), trial=i) for t in tasks for i in range(trials)]
    trajectories = run_episodes(episodes, policy, rollout)
    return sum(t.passed for t in trajectories) / len(trajectories)


def judge_rl_config(warm: Path, out: Path, steps: int, lr: float) -> RLConfig:
    """`rl_config` for the judging tasks, synchronous (each step's groups sampled by the weights it updates), replies
    of up to 48 tokens, learning rate `lr` (1e-3 took the summary stage from 0.16 to 0.94 in 30 steps; the longer
    verdicts needed 2e-3). Streaming at staleness 0 with 6 groups in flight dropped nearly as many groups as stale as
    it trained, and in one of two runs the summary collapsed onto always choosing candidate 1 (0.99 / 0.03)."""
    cfg = rl_config(warm, out, steps, mode="sync", max_wait_seconds=120, max_staleness=0)
    sampling = cfg.rollout.sampling.model_copy(update={"max_new_tokens": 48})
    return cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"lr": lr}),
                                  "rollout": cfg.rollout.model_copy(update={"sampling": sampling})})


def rl_config(warm: Path, out: Path, steps: int, mode: str = "async", max_wait_seconds: float = 60.0,
              max_staleness: int = 1, inflight_groups: int = 12) -> RLConfig:
    """The GSPO run that trains the switchboard from `warm`: 16 groups x 8 rollouts a step, staleness at most
    `max_staleness`, `inflight_groups` groups rolling out at once, lr 2e-3, clip 0.2, no curriculum (every task from
    the start)."""
    return RLConfig(model=str(warm), tasks="in-memory", out=str(out), mode=mode, steps=steps, groups_per_step=16,
                    max_staleness=max_staleness, checkpoint_every=0, curriculum=False,
                    max_wait_seconds=max_wait_seconds,
                    manager=ManagerConfig(group_size=8, inflight_groups=inflight_groups, seed=0),
                    trainer=TrainerConfig(algorithm="gspo", lr=2e-3, eps_low=0.2, eps_high=0.2,
                                          precision=PRECISION, micro_batch_tokens=ONE_BATCH), rollout=ROLLOUT)
