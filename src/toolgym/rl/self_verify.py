"""Self-verification as an auxiliary RL task: the policy judges its own on-policy episodes, rewarded by agreement
with the verifier.

After a task group is played, a seeded share (`SelfVerification.ratio`) of groups is also judged: one of its episodes,
drawn with the same seed and compressed as Heavy Thinking compresses candidates (the calls that ran with cut results,
the user's replies, the final answer), is shown G times (the group size) to the same policy with `VERIFY_PROMPT`, and
the only tool offered is `submit_verdict` (`satisfied`: boolean, `reason`: string), so a model trained on tool calls
answers in a form it already writes. A judgment's reward is 1 when `satisfied` equals the verifier's verdict on that
episode and 0 otherwise (no parseable verdict counts as disagreement). The G judgments of one prompt form a second
SampleGroup (kind "verify") that the queue and trainer treat like any other (group-relative advantages, GSPO,
staleness bound). Judging every episode of the group once instead (a group of G prompts) ended the switchboard judge
at 0.50 (a constant verdict), 0.65 and 0.79 in three runs, against 0.90-0.98 this way (tests/test_judges_learn.py).
"""

from __future__ import annotations

import asyncio
import random
import zlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from toolgym.agent.rollout import BatchedPolicy, RolloutConfig
from toolgym.agent.tokens import TokenTracker
from toolgym.agent.toolcall import parse_assistant, parse_native, strip_thinking
from toolgym.agent.trajectory import Trajectory, TurnRecord
from toolgym.heavy.agentic import CandidateStep, render_steps
from toolgym.policy.base import Completion, GenerationRequest, Policy, SamplingParams
from toolgym.rl.manager import ManagerConfig, play_group
from toolgym.rl.queue import SampleGroup
from toolgym.tasks.model import Task

VERIFY_PROMPT = """A user asked an agent:
{request}

What the agent did: the tool calls that ran, in order, with results cut to {result_chars} characters, any replies \
from the user, and its final answer.
{episode}

Did the agent satisfy the request: the right changes to the database, and every value the user asked for stated in \
its final answer? Call submit_verdict with satisfied true or false and a short reason."""
VERDICT_TOOL = "submit_verdict"
VERDICT_TOOLS = [{"type": "function", "function": {
    "name": VERDICT_TOOL, "description": "Say whether the agent satisfied the user's request, and why.",
    "parameters": {"type": "object", "required": ["satisfied", "reason"], "properties": {
        "satisfied": {"type": "boolean", "description": "true if the request was satisfied"},
        "reason": {"type": "string", "description": "why, in one sentence"}}}}}]


class SelfVerification(BaseModel):
    """How much self-verification an RL run mixes in: the share of task groups whose episodes are also judged."""

    model_config = ConfigDict(extra="forbid")

    ratio: float = Field(0.0, ge=0.0, le=1.0, description="share of task groups also judged; 0 turns it off")
    result_chars: int = Field(200, ge=1, description="tool results are cut to this many characters")


def episode_steps(trajectory: Trajectory) -> list[CandidateStep]:
    """What an episode did, read from its messages: each tool call paired with the tool message that answered it, and
    every user reply after the opening request (after a context reset, only what the messages still hold)."""
    steps: list[CandidateStep] = []
    calls: list[Any] = []
    users = 0
    for message in trajectory.messages:
        role = message.get("role")
        if role == "assistant":
            native = message.get("tool_calls")
            calls = list(parse_native(native)[0] if native else parse_assistant(message.get("content") or "").tool_calls)
        elif role == "tool" and calls:
            steps.append(CandidateStep(kind="call", call=calls.pop(0), text=str(message.get("content") or "")))
        elif role == "user":
            users += 1
            if users > 1:
                steps.append(CandidateStep(kind="user", text=str(message.get("content") or "")))
    return steps


def _first(trajectory: Trajectory, role: str) -> str:
    return next((str(m.get("content") or "") for m in trajectory.messages if m.get("role") == role), "")


def verification_messages(trajectory: Trajectory, result_chars: int = 200) -> list[dict[str, Any]]:
    """The judge's conversation: the episode's own system prompt, then `VERIFY_PROMPT` over the compressed episode
    and the opening request as the agent saw it (noise included)."""
    episode = "\n".join(render_steps(episode_steps(trajectory), strip_thinking(trajectory.final_answer), result_chars))
    prompt = VERIFY_PROMPT.format(request=_first(trajectory, "user"), result_chars=result_chars, episode=episode)
    return [{"role": "system", "content": _first(trajectory, "system")}, {"role": "user", "content": prompt}]


def parse_verdict(completion: Completion) -> bool | None:
    """`satisfied` of the completion's first `submit_verdict` call; None when there is no such call with a boolean."""
    if completion.tool_calls:
        calls = parse_native(completion.tool_calls)[0]
    else:
        calls = parse_assistant(completion.text).tool_calls
    verdict = next((c.arguments.get("satisfied") for c in calls if c.name == VERDICT_TOOL), None)
    return verdict if isinstance(verdict, bool) else None


def judgment(judged: Trajectory, prompt: list[dict[str, Any]], completion: Completion,
             tracker: TokenTracker | None) -> Trajectory:
    """The judgment as a trajectory: prompt and verdict, the judge's sampled tokens, reward 1 on agreement."""
    verdict = parse_verdict(completion)
    agrees = verdict is not None and verdict == judged.passed
    if tracker is not None:
        tracker.add_sampled(completion.token_ids, completion.logprobs, completion.version)
    truth = "passed" if judged.passed else "failed"
    said = "no verdict" if verdict is None else f"satisfied={str(verdict).lower()}"
    return Trajectory(
        task_id=judged.task_id, domain=judged.domain, trial=judged.trial, noise=dict(judged.noise),
        messages=[*prompt, {"role": "assistant", "content": completion.text, "tool_calls": completion.tool_calls}],
        segments=tracker.segments if tracker is not None else [],
        turns=[TurnRecord(index=0, version=completion.version, n_tokens=len(completion.token_ids),
                          finish_reason=completion.finish_reason)],
        final_answer=completion.text, passed=agrees, reward=float(agrees),
        verdict=f"judge said {said}; the episode {truth}")


def _request(judged: Trajectory, settings: SelfVerification, tokenizer: Any
             ) -> tuple[list[dict[str, Any]], GenerationRequest, TokenTracker | None]:
    prompt = verification_messages(judged, settings.result_chars)
    tracker = TokenTracker(tokenizer, VERDICT_TOOLS) if tokenizer is not None else None
    ids = tracker.start(prompt) if tracker is not None else None
    return prompt, GenerationRequest(messages=prompt, tools=VERDICT_TOOLS, prompt_ids=ids), tracker


async def judge_episode(client: BatchedPolicy, group: SampleGroup, index: int, n: int,
                        settings: SelfVerification) -> SampleGroup:
    """`n` judgments by the policy of episode `index` of `group`, as a "verify" group: all of one prompt, so their
    group-relative advantages compare verdicts on the same episode."""
    tokenizer = getattr(client.policy, "tokenizer", None)
    judged = group.trajectories[index]
    requests = [_request(judged, settings, tokenizer) for _ in range(n)]
    completions = await asyncio.gather(*(client.generate(request) for _, request, _ in requests))
    return SampleGroup(group_id=f"{group.group_id}-verify", task_id=group.task_id, domain=group.domain,
                       trajectories=[judgment(judged, prompt, c, tracker)
                                     for (prompt, _, tracker), c in zip(requests, completions)],
                       created_step=group.created_step, kind="verify")


def judge(policy: Policy, trajectories: list[Trajectory], rollout: RolloutConfig,
          settings: SelfVerification | None = None, sampling: SamplingParams | None = None) -> list[bool | None]:
    """The policy's verdict on each trajectory (None: no parseable verdict), for measuring verification accuracy."""
    settings = settings or SelfVerification()
    tokenizer = getattr(policy, "tokenizer", None)
    verdicts: list[bool | None] = []
    for start in range(0, len(trajectories), rollout.max_batch):
        chunk = trajectories[start:start + rollout.max_batch]
        requests = [_request(t, settings, tokenizer)[1] for t in chunk]
        verdicts += [parse_verdict(c) for c in policy.generate(requests, sampling or rollout.sampling)]
    return verdicts


class SelfVerifyingPlayer:
    """A GroupPlayer: the task's group, then, for a seeded `ratio` share of group ids, `group_size` judgments of one
    of its episodes (drawn with the same seed)."""

    def __init__(self, settings: SelfVerification, seed: int = 0):
        self.settings = settings
        self.seed = seed

    def _rng(self, gid: int) -> random.Random:
        return random.Random(zlib.crc32(f"{self.seed}:verify:{gid}".encode()))

    def judges(self, gid: int) -> bool:
        """Whether group `gid` is also judged (a function of seed and id, so a regenerated group decides alike)."""
        return self._rng(gid).random() < self.settings.ratio

    def judged_episode(self, gid: int, size: int) -> int:
        """Which of group `gid`'s `size` episodes is judged."""
        rng = self._rng(gid)
        rng.random()
        return rng.randrange(size)

    async def __call__(self, client: BatchedPolicy, gid: int, task: Task, cfg: ManagerConfig,
                       rollout: RolloutConfig, noise_levels: dict[str, float] | None, step: int) -> list[SampleGroup]:
        group = await play_group(client, gid, task, cfg, rollout, noise_levels, step)
        if not self.judges(gid):
            return [group]
        index = self.judged_episode(gid, len(group.trajectories))
        return [group, await judge_episode(client, group, index, cfg.group_size, self.settings)]


class VerificationScore(BaseModel):
    """How verdicts match the verifier: accuracy (no verdict counts as wrong), balanced accuracy (the mean of the
    accuracies on passed and on failed episodes, so always answering "failed" scores 0.5, not the fail rate), the
    share of judgments without a verdict, and how many episodes passed of how many."""

    accuracy: float
    balanced_accuracy: float
    no_verdict: float
    passed: int
    episodes: int


def verification_scores(verdicts: list[bool | None], truths: list[bool]) -> VerificationScore:
    """Score verdicts against the verifier's truths (same order)."""
    if len(verdicts) != len(truths) or not truths:
        raise ValueError(f"need one verdict per episode, got {len(verdicts)} verdicts for {len(truths)} episodes")
    right = [v is not None and v == t for v, t in zip(verdicts, truths)]
    per_class = [sum(r for r, t in zip(right, truths) if t == cls) / n
                 for cls in (True, False) if (n := sum(t == cls for t in truths))]
    return VerificationScore(accuracy=sum(right) / len(right), balanced_accuracy=sum(per_class) / len(per_class),
                             no_verdict=sum(v is None for v in verdicts) / len(verdicts), passed=sum(truths),
                             episodes=len(truths))
