"""Heavy Thinking for chat: K candidates in parallel, then a summary model writes one answer over them.

Stage 1 sends K copies of the conversation to the candidate policy in one `generate` call (one batch), at
`HeavyConfig.temperature`. When `seed` is set, candidates differ by the Policy protocol's batch convention:
request i of a batch seeded `s` samples with `s + i` (VLLMPolicy, the proxy's upstream policy), or all rows draw
from one generator seeded `s` (HFPolicy). Each batch's `s` is `seed` plus an offset, so that under the `s + i`
convention no two requests of one `answer_many` call (candidates or summaries, any round) share a seed.

Stage 2 gives the summary policy `summary_messages(conversation, candidates)`: the conversation unchanged, then one
user message, `SUMMARY_TEMPLATE` with the candidate answers filled in, each as
`<candidate i>\\n{answer}\\n</candidate i>` (`CANDIDATE_TEMPLATE`, i from 1, in sampling order). A candidate's
answer is its text with every `<think>` block stripped (`strip_thinking`) plus its native tool calls written as
`<tool_call>{json}</tool_call>`; nothing else of the candidates is shown. The summary request carries the
conversation's tools, so the summary's completion is an ordinary assistant answer (text and/or tool calls) that
can be appended to the history as is.

Rounds: with `rounds > 1`, each later round samples K fresh candidates from the same conversation and adds the
previous round's summary as candidate K+1 (last), so the summary model can keep, correct or extend it. Every
round's summary prompt is kept in `HeavyResult.summary_prompts`; the last summary is the answer.

Context memory: `HeavyConversation` keeps the user turns and only the summarized answers (thinking stripped);
candidates never enter the history.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from toolgym.agent.toolcall import format_tool_call, parse_native, strip_thinking
from toolgym.policy.base import Completion, GenerationRequest, Policy, SamplingParams

SUMMARY_TEMPLATE = (
    "Below are {k} candidate responses to the conversation above, written independently; some may be wrong or "
    "incomplete. Check them against the conversation and against each other, then write the single best response "
    "to the last message. Reply exactly as you would reply directly (the same format, tool calls included if a "
    "tool should be called), without mentioning the candidates or this instruction.\n\n{candidates}"
)
CANDIDATE_TEMPLATE = "<candidate {i}>\n{text}\n</candidate {i}>"


def candidate_text(completion: Completion) -> str:
    """What the summary model sees of one candidate: its visible text plus its native tool calls, no thinking."""
    calls, _ = parse_native(completion.tool_calls or [])
    return "\n".join(part for part in [strip_thinking(completion.text), *map(format_tool_call, calls)] if part)


def summary_messages(messages: list[dict[str, Any]], candidates: list[str]) -> list[dict[str, Any]]:
    """The stage-2 prompt: the conversation, then one user message with the candidate answers (see module doc)."""
    blocks = "\n\n".join(CANDIDATE_TEMPLATE.format(i=i, text=text) for i, text in enumerate(candidates, 1))
    return [*messages, {"role": "user", "content": SUMMARY_TEMPLATE.format(k=len(candidates), candidates=blocks)}]


def assistant_message(completion: Completion) -> dict[str, Any]:
    """A completion as the assistant message a history keeps: thinking stripped, native tool calls kept."""
    message: dict[str, Any] = {"role": "assistant", "content": strip_thinking(completion.text)}
    if completion.tool_calls:
        message["tool_calls"] = completion.tool_calls
    return message


class HeavyConfig(BaseModel):
    """Heavy Thinking settings: K candidates per round, their temperature, rounds, and the summary's sampling."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(4, ge=1, description="Candidates sampled per round.")
    temperature: float = Field(1.0, ge=0.0, description="Candidate sampling temperature.")
    rounds: int = Field(1, ge=1, description="Summary rounds; later rounds also see the previous summary.")
    summary_temperature: float = Field(0.0, ge=0.0, description="Summary sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling for candidates and summaries.")
    max_new_tokens: int = Field(512, ge=1, description="Token limit of each candidate and each summary.")
    seed: int | None = Field(None, description="Seed of every batch; None samples unseeded.")


class HeavyResult(BaseModel):
    """One heavy answer: the final summary, every candidate (round by round) and each round's summary prompt."""

    answer: Completion
    candidates: list[Completion]
    summary_prompts: list[list[dict[str, Any]]]
    summaries: list[Completion]


class HeavyThinker:
    """Parallel candidates from `policy`, summarized by `summary_policy` (default: the same policy)."""

    def __init__(self, policy: Policy, summary_policy: Policy | None = None, config: HeavyConfig | None = None):
        self.policy = policy
        self.summary_policy = summary_policy if summary_policy is not None else policy
        self.config = config if config is not None else HeavyConfig()

    def _sampling(self, temperature: float, seed_offset: int) -> SamplingParams:
        seed = None if self.config.seed is None else self.config.seed + seed_offset
        return SamplingParams(temperature=temperature, top_p=self.config.top_p,
                              max_new_tokens=self.config.max_new_tokens, seed=seed)

    def answer(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> HeavyResult:
        """A heavy answer to one conversation."""
        return self.answer_many([messages], tools)[0]

    def answer_many(self, conversations: list[list[dict[str, Any]]],
                    tools: list[dict[str, Any]] | None = None) -> list[HeavyResult]:
        """Heavy answers to many conversations: per round one candidate batch (all conversations x K) and one
        summary batch (one per conversation)."""
        if not conversations:
            return []
        k, n = self.config.k, len(conversations)
        stride = n * k + n  # requests per round: the seed offsets of round r start at r * stride
        candidates: list[list[Completion]] = [[] for _ in conversations]
        prompts: list[list[list[dict[str, Any]]]] = [[] for _ in conversations]
        summaries: list[list[Completion]] = [[] for _ in conversations]
        for r in range(self.config.rounds):
            batch = [GenerationRequest(messages=list(m), tools=tools or []) for m in conversations for _ in range(k)]
            drawn = self.policy.generate(batch, self._sampling(self.config.temperature, r * stride))
            round_prompts = []
            for c in range(n):
                fresh = drawn[c * k:(c + 1) * k]
                candidates[c].extend(fresh)
                shown = [candidate_text(x) for x in fresh] + [candidate_text(s) for s in summaries[c][-1:]]
                round_prompts.append(summary_messages(conversations[c], shown))
                prompts[c].append(round_prompts[-1])
            requests = [GenerationRequest(messages=p, tools=tools or []) for p in round_prompts]
            for c, s in enumerate(self.summary_policy.generate(
                    requests, self._sampling(self.config.summary_temperature, r * stride + n * k))):
                summaries[c].append(s)
        return [HeavyResult(answer=summaries[c][-1], candidates=candidates[c], summary_prompts=prompts[c],
                            summaries=summaries[c]) for c in range(n)]


class HeavyConversation:
    """A multi-turn chat answered by a HeavyThinker; the history keeps only user turns and summarized answers."""

    def __init__(self, thinker: HeavyThinker, system: str | None = None, tools: list[dict[str, Any]] | None = None):
        self.thinker = thinker
        self.tools = tools
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []

    def ask(self, content: str) -> HeavyResult:
        """Add a user turn, answer it heavily, and append only the final answer to the history."""
        self.messages.append({"role": "user", "content": content})
        result = self.thinker.answer(self.messages, self.tools)
        self.messages.append(assistant_message(result.answer))
        return result
