"""The multi-turn rollout loop: system prompt with tools, user turn, model turns, tool results, until an answer
the user accepts or a turn/token limit. Many episodes run concurrently on one event loop; their generation
requests are batched into single `Policy.generate` calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from toolgym.agent.context import ContextConfig, Summarizer, discard_all, extractive_summary, summarize_tool_results
from toolgym.agent.tokens import TokenTracker
from toolgym.agent.toolcall import ParsedTurn, parse_assistant, parse_native
from toolgym.agent.trajectory import ContextEvent, Trajectory, TurnRecord
from toolgym.agent.user import RuleUser, UserSimulator
from toolgym.envs.families import env_title, verify_episode
from toolgym.policy.base import Completion, GenerationRequest, Policy, SamplingParams
from toolgym.tasks.model import Task
from toolgym.tasks.progress import chain_progress

SYSTEM_PROMPT = ("You are a support agent for {title}. Use the tools to do exactly what the user asks, one step at a "
                 "time. When done, answer the user briefly and state every value they asked for.")


class RolloutConfig(BaseModel):
    max_turns: int = 16
    max_tool_calls_per_turn: int = 8
    max_total_tokens: int = 32_768
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    context: ContextConfig = Field(default_factory=ContextConfig)
    system_prompt: str = SYSTEM_PROMPT
    max_batch: int = 64
    progress_reward: float = Field(0.0, ge=0.0, lt=0.5)
    """Reward of a failed episode per unit of gold-chain progress (tasks.progress); 0 keeps rewards pass/fail. A policy
    too weak to pass gets groups of equal zero rewards without it; below 0.5, so a failure never counts as a pass."""


@dataclass
class Episode:
    """One task attempt: the task (its possibly noisy text), the environment it acts on, and its user."""

    task: Task
    env: Any
    trial: int = 0
    user: UserSimulator | None = None
    noise: dict[str, float] = field(default_factory=dict)


class BatchedPolicy:
    """Collects generation requests from concurrent episodes and serves them in batches."""

    def __init__(self, policy: Policy, sampling: SamplingParams, max_batch: int = 64, threaded: bool = True):
        self.policy = policy
        self.sampling = sampling
        self.max_batch = max_batch
        self.threaded = threaded
        self._pending: list[tuple[GenerationRequest, asyncio.Future]] = []
        self._draining = False
        self.batches = 0

    async def generate(self, request: GenerationRequest) -> Completion:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)
            while self._pending:
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                requests = [r for r, _ in batch]
                try:
                    if self.threaded:
                        results = await asyncio.to_thread(self.policy.generate, requests, self.sampling)
                    else:
                        results = self.policy.generate(requests, self.sampling)
                except Exception as exc:  # a failed batch fails its episodes, not the whole run
                    for _, fut in batch:
                        fut.set_exception(exc)
                    continue
                self.batches += 1
                for (_, fut), res in zip(batch, results):
                    fut.set_result(res)
                await asyncio.sleep(0)
        finally:
            self._draining = False


INVALID_CALL = "invalid_tool_call"


def tool_messages(env: Any, parsed: ParsedTurn, native: list[dict[str, Any]] | None = None,
                  max_calls: int = 8) -> list[dict[str, Any]]:
    """Run a turn's tool calls; one tool message per call, plus one error message per unparseable call."""
    ids = [tc.get("id", f"call_{i}") for i, tc in enumerate(native or [])]
    out = []
    for i, call in enumerate(parsed.tool_calls[:max_calls]):
        message = {"role": "tool", "name": call.name, "content": env.call(call.name, call.arguments).text()}
        if i < len(ids):
            message["tool_call_id"] = ids[i]
        out.append(message)
    out.extend({"role": "tool", "name": INVALID_CALL, "content": json.dumps({"error": e})} for e in parsed.errors)
    return out


def approx_tokens(messages: list[dict[str, Any]]) -> int:
    """A conversation's length in tokens, estimated at 4 characters a token, for policies without a tokenizer."""
    return sum(len(str(m.get("content") or "")) for m in messages) // 4


class _EpisodeRun:
    """State of one running episode."""

    def __init__(self, ep: Episode, client: BatchedPolicy, cfg: RolloutConfig, summarizer: Summarizer):
        self.ep, self.client, self.cfg, self.summarizer = ep, client, cfg, summarizer
        self.user = ep.user or RuleUser(ep.task)
        self.tools = ep.env.openai_tools()
        title = env_title(ep.task, ep.env)
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": cfg.system_prompt.format(title=title)},
            {"role": "user", "content": self.user.opening()},
        ]
        tokenizer = getattr(client.policy, "tokenizer", None)
        self.tracker = TokenTracker(tokenizer, self.tools) if tokenizer is not None else None
        self.prompt_ids = self.tracker.start(self.messages) if self.tracker is not None else None
        self.traj = Trajectory(task_id=ep.task.id, domain=ep.task.domain, trial=ep.trial, noise=dict(ep.noise))
        self.answers: list[str] = []
        self.since_reset = 0

    def context_tokens(self) -> int:
        return self.tracker.n_tokens() if self.tracker is not None else approx_tokens(self.messages)

    def _restart(self, messages: list[dict[str, Any]], kind: str, turn: int) -> None:
        before = self.context_tokens()
        self.messages = messages
        if self.tracker is not None:
            self.prompt_ids = self.tracker.start(messages)
        self.traj.events.append(ContextEvent(kind=kind, turn=turn, tokens_before=before,
                                             tokens_after=self.context_tokens()))

    def manage_context(self, turn: int) -> None:
        ctx = self.cfg.context
        if self.since_reset >= ctx.reset_after_turns:
            self._restart(discard_all(self.messages), "reset", turn)
            self.since_reset = 0
        elif self.context_tokens() > ctx.summary_threshold_tokens:
            folded = summarize_tool_results(self.messages, ctx.keep_recent_tool_results, self.summarizer)
            if folded is not None:
                self._restart(folded, "summary", turn)

    def run_tools(self, parsed: ParsedTurn, native: list[dict[str, Any]] | None) -> None:
        new = tool_messages(self.ep.env, parsed, native, self.cfg.max_tool_calls_per_turn)
        self.messages.extend(new)
        self.traj.n_tool_calls += sum(1 for m in new if m["name"] != INVALID_CALL)

    async def run(self) -> Trajectory:
        traj, cfg = self.traj, self.cfg
        for turn in range(cfg.max_turns):
            self.manage_context(turn)
            budget = cfg.max_total_tokens - cfg.sampling.max_new_tokens
            if self.tracker is not None and self.tracker.n_tokens() > budget:
                traj.termination = "max_tokens"
                break
            request = GenerationRequest(messages=list(self.messages), tools=self.tools, prompt_ids=self.prompt_ids)
            completion = await self.client.generate(request)
            if self.tracker is not None:
                self.tracker.add_sampled(completion.token_ids, completion.logprobs, completion.version)
            if completion.tool_calls:
                calls, errors = parse_native(completion.tool_calls)
                parsed = ParsedTurn(content=completion.text.strip(), tool_calls=calls, errors=errors)
            else:
                parsed = parse_assistant(completion.text)
            assistant: dict[str, Any] = {"role": "assistant", "content": completion.text}
            if completion.tool_calls:
                assistant["tool_calls"] = completion.tool_calls
            self.messages.append(assistant)
            traj.turns.append(TurnRecord(index=turn, version=completion.version, n_tokens=len(completion.token_ids),
                                         finish_reason=completion.finish_reason, tool_calls=parsed.tool_calls,
                                         parse_error="; ".join(parsed.errors) or None))
            self.since_reset += 1
            if parsed.tool_calls or parsed.errors:
                self.run_tools(parsed, completion.tool_calls)
            else:
                self.answers.append(parsed.content)
                reply = self.user.respond(parsed.content)
                if reply.done:
                    traj.termination = "answer"
                    break
                self.messages.append({"role": "user", "content": reply.text})
            if self.tracker is not None:
                self.prompt_ids = self.tracker.sync(self.messages)
        else:
            traj.termination = "max_turns"
        return self.finish()

    def finish(self) -> Trajectory:
        traj = self.traj
        traj.messages = self.messages
        traj.segments = self.tracker.segments if self.tracker is not None else []
        traj.final_answer = "\n".join(a for a in self.answers if a)
        verdict = verify_episode(self.ep.task, self.ep.env, traj.final_answer)
        traj.progress = verdict.progress if verdict.progress is not None else chain_progress(
            self.ep.task.gold_chain, [c for turn in traj.turns for c in turn.tool_calls])
        traj.passed, traj.verdict = verdict.passed, verdict.explain()
        traj.reward = verdict.reward if verdict.passed else self.cfg.progress_reward * traj.progress
        return traj


async def run_episode(ep: Episode, client: BatchedPolicy, cfg: RolloutConfig,
                      summarizer: Summarizer = extractive_summary) -> Trajectory:
    """Run one episode; a policy failure ends it with termination 'error' instead of raising."""
    run = _EpisodeRun(ep, client, cfg, summarizer)
    try:
        return await run.run()
    except Exception as exc:
        run.traj.termination, run.traj.error = "error", f"{type(exc).__name__}: {exc}"
        return run.finish()


async def run_episodes_async(episodes: Sequence[Episode], policy: Policy, cfg: RolloutConfig,
                             concurrency: int = 64, summarizer: Summarizer = extractive_summary,
                             on_done: Callable[[Trajectory], None] | None = None,
                             threaded: bool = True) -> list[Trajectory]:
    """Run episodes with at most `concurrency` in flight, batching their generation calls."""
    client = BatchedPolicy(policy, cfg.sampling, cfg.max_batch, threaded)
    gate = asyncio.Semaphore(concurrency)

    async def one(ep: Episode) -> Trajectory:
        async with gate:
            traj = await run_episode(ep, client, cfg, summarizer)
        if on_done:
            on_done(traj)
        return traj

    return list(await asyncio.gather(*(one(ep) for ep in episodes)))


def run_episodes(episodes: Sequence[Episode], policy: Policy, cfg: RolloutConfig | None = None,
                 concurrency: int = 64, **kwargs: Any) -> list[Trajectory]:
    """Synchronous entry point around `run_episodes_async`."""
    return asyncio.run(run_episodes_async(episodes, policy, cfg or RolloutConfig(), concurrency, **kwargs))
