"""Agentic Heavy Thinking: K candidate trajectories per episode, each on its own fork of the environment, then a
summary model reads them (compressed, thinking stripped) and writes ONE answer whose tool calls are committed to the
real environment.

1. `run_candidates`: every episode's environment is forked K times and all K x episodes candidates run concurrently
   through the rollout loop (their generation is batched); the real environments are never touched.
2. `summarize`: one batched call of the summary policy per `max_batch` episodes, prompted with `SUMMARY_PROMPT`
   (or, with `choice_tool`, `CHOICE_PROMPT` and a `choose_candidate` tool as the only tool).
3. `commit`: the chosen or composed tool calls are replayed, in order, on the real environment, which is then
   verified together with the final answer. Unusable summary output falls back to the self-consistency choice
   (`majority_choice`), and the record says so.

A candidate's actions are the tool calls that ran on its fork; a call that tool noise dropped before it ran ("not
processed, please retry") is left out, and on commit such a drop is retried up to `commit_retries` times, so a
committed write takes effect exactly once. Costs stay honest: an outcome's trajectory carries the turns and token
segments of all K candidates plus the summary turn, so a report's turns/tokens columns show what the method spent.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from toolgym.agent.rollout import Episode, RolloutConfig, run_episodes
from toolgym.agent.tokens import TokenTracker
from toolgym.agent.toolcall import ParsedTurn, parse_assistant, parse_native, strip_thinking
from toolgym.agent.trajectory import TokenSegment, Trajectory, TurnRecord
from toolgym.agent.user import RuleUser, UserReply
from toolgym.envs.environment import ToolCall, ToolResult
from toolgym.envs.families import env_title, verify_episode
from toolgym.noise.tool import FAILURE_KINDS
from toolgym.policy.base import Completion, GenerationRequest, Policy, SamplingParams
from toolgym.tasks.progress import chain_progress

SUMMARY_HEADER = """The user asked:
{request}

{k} candidate agents each worked on this request in a private copy of the database; none of their actions has \
reached the real database yet. For each candidate: the tool calls that ran, in order, with results cut to \
{result_chars} characters, any replies from the user, and its final answer.

{candidates}

"""
SUMMARY_PROMPT = SUMMARY_HEADER + """Decide what happens on the real database and answer the user. Reply in exactly \
one of two forms:
1. <choice>N</choice> to apply candidate N's tool calls, in order, and send candidate N's final answer.
2. The tool calls to apply, in order, one per line, each written as \
<tool_call>{{"name": "tool_name", "arguments": {{...}}}}</tool_call>, followed by your answer to the user stating \
every value they asked for."""
"""The summary model's prompt (the user turn after the agent's system prompt and tools). Its output is parsed by
`parse_summary`: a `<choice>N</choice>` (1-based) commits candidate N; otherwise its `<tool_call>` lines are committed
and its remaining text (thinking stripped) is the final answer."""
CHOICE_PROMPT = SUMMARY_HEADER + """Decide which candidate's tool calls are applied to the real database, in order, \
and whose final answer the user gets: call the tool choose_candidate with that candidate's number."""
"""The prompt with `AgenticHeavyConfig.choice_tool`: the only tool offered is `choose_candidate` (see `choice_tool`),
so the summary chooses and never composes."""
CHOICE_TOOL = "choose_candidate"


def choice_tool(k: int) -> dict[str, Any]:
    """The `choose_candidate` tool offered to a choosing summary: one integer parameter, 1..k."""
    return {"type": "function", "function": {
        "name": CHOICE_TOOL, "description": "Apply this candidate's tool calls and send its final answer.",
        "parameters": {"type": "object", "required": ["candidate"], "properties": {
            "candidate": {"type": "integer", "enum": list(range(1, k + 1)),
                          "description": "the chosen candidate's number"}}}}}


CANDIDATE_HEADER = "Candidate {index} ({n_calls} tool calls, ended by {termination}):"
_CHOICE = re.compile(r"<choice>\s*(\d+)\s*</choice>")


class AgenticHeavyConfig(BaseModel):
    """Heavy Thinking settings: K candidates sampled at `temperature`, and a summary sampled at `summary_temperature`."""

    k: int = Field(4, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    max_new_tokens: int | None = Field(None, ge=1, description="candidates' tokens per turn; None keeps the rollout's")
    summary_temperature: float = Field(0.0, ge=0.0)
    summary_max_new_tokens: int = Field(1024, ge=1)
    result_chars: int = Field(200, ge=1, description="tool results are cut to this many characters for the summary")
    commit_retries: int = Field(3, ge=0, description="retries of a committed call that tool noise dropped")
    choice_tool: bool = Field(False, description="the summary only chooses, by calling a choose_candidate tool "
                                                 "(CHOICE_PROMPT), instead of writing <choice>N</choice> or calls")
    seed: int | None = 0


class CandidateStep(BaseModel):
    """One event of a candidate: a tool call that ran (with its result text) or a reply from the user."""

    kind: Literal["call", "user"]
    call: ToolCall | None = None
    text: str


class Candidate(BaseModel):
    """One candidate trajectory on its own fork: its record, its fork's final state hash, and what it did."""

    index: int = Field(description="1-based, as the summary prompt numbers it")
    trajectory: Trajectory
    state_hash: str
    steps: list[CandidateStep] = Field(default_factory=list)

    @property
    def actions(self) -> list[ToolCall]:
        """The tool calls that ran on the fork, in order (what committing this candidate replays)."""
        return [s.call for s in self.steps if s.call is not None]

    @property
    def answer(self) -> str:
        """The candidate's final answer with any thinking stripped."""
        return strip_thinking(self.trajectory.final_answer)

    @property
    def passed(self) -> bool:
        """Whether the candidate passed the verifier on its own fork (only oracle baselines may look at this)."""
        return self.trajectory.passed


class Decision(BaseModel):
    """What an aggregator decided for one episode: commit candidate `chosen`, or commit `calls` and send `answer`."""

    kind: Literal["choice", "composed", "fallback"]
    chosen: int | None = None
    calls: list[ToolCall] = Field(default_factory=list)
    answer: str = ""
    reason: str | None = Field(None, description="why the summary output was unusable (kind 'fallback')")


class CommittedCall(BaseModel):
    """A call replayed on the real environment: its result, how many attempts it took, the candidate it came from."""

    call: ToolCall
    result: str
    attempts: int
    candidate: int | None = Field(None, description="1-based source candidate; None when the summary composed it")


class CandidateInfo(BaseModel):
    """A candidate's outcome and cost, for the side record (never shown to the summary model)."""

    index: int
    state_hash: str
    passed_on_fork: bool
    termination: str
    n_turns: int
    n_tokens: int
    n_tool_calls: int


class HeavyRecord(BaseModel):
    """What an aggregation method did for one episode: its decision, the committed calls, and the K candidates."""

    method: str
    k: int
    decision: Decision
    committed: list[CommittedCall]
    candidates: list[CandidateInfo]


class HeavyOutcome(BaseModel):
    """One aggregated episode: a Trajectory that EvalRun and reports use unchanged, and its side record."""

    trajectory: Trajectory
    record: HeavyRecord


def call_tool(env: Any, name: str, arguments: dict[str, Any] | None) -> tuple[ToolResult, bool]:
    """Call a tool; also say whether it ran (tool noise may drop a call before it runs and ask for a retry)."""
    log = getattr(env, "log", None)
    before = len(log) if log is not None else 0
    result = env.call(name, arguments)
    dropped = log is not None and len(log) > before and log[-1].kind in FAILURE_KINDS
    return result, not dropped


class _RecordingEnv:
    """A candidate's fork that logs every tool call that ran; everything else is delegated to the fork."""

    def __init__(self, env: Any, steps: list[CandidateStep]):
        self.env = env
        self.steps = steps

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def call(self, name: str, arguments: Any = None) -> ToolResult:
        result, ran = call_tool(self.env, name, arguments)
        if ran:
            self.steps.append(CandidateStep(kind="call", call=ToolCall(name=name, arguments=arguments or {}),
                                            text=result.text()))
        return result


class _RecordingUser:
    """The candidate's rule-based user, logging each reply that continues the conversation."""

    def __init__(self, user: RuleUser, steps: list[CandidateStep]):
        self.user = user
        self.steps = steps

    def opening(self) -> str:
        return self.user.opening()

    def respond(self, assistant_text: str) -> UserReply:
        reply = self.user.respond(assistant_text)
        if not reply.done:
            self.steps.append(CandidateStep(kind="user", text=reply.text))
        return reply


def candidate_rollout(config: AgenticHeavyConfig, rollout: RolloutConfig | None = None) -> RolloutConfig:
    """The rollout settings of the candidates: the rollout's, sampled at the heavy temperature, seed and token limit."""
    rollout = rollout or RolloutConfig()
    update: dict[str, Any] = {"temperature": config.temperature, "seed": config.seed}
    if config.max_new_tokens is not None:
        update["max_new_tokens"] = config.max_new_tokens
    return rollout.model_copy(update={"sampling": rollout.sampling.model_copy(update=update)})


def run_candidates(episodes: Sequence[Episode], policy: Policy, config: AgenticHeavyConfig,
                   rollout: RolloutConfig | None = None, concurrency: int = 64,
                   on_done: Callable[[Trajectory], None] | None = None) -> list[list[Candidate]]:
    """K candidates per episode, each on its own fork, all run concurrently; returns them per episode, in order.

    Candidates talk to a fresh rule-based user each, so an episode with a custom `user` is rejected."""
    if any(ep.user is not None for ep in episodes):
        raise ValueError("agentic heavy thinking needs episodes without a custom user (each candidate gets its own)")
    forks, logs, runs = [], [], []
    for ep in episodes:
        for _ in range(config.k):
            steps: list[CandidateStep] = []
            fork = _RecordingEnv(ep.env.fork(), steps)
            forks.append(fork)
            logs.append(steps)
            runs.append(Episode(task=ep.task, env=fork, trial=ep.trial, user=_RecordingUser(RuleUser(ep.task), steps),
                                noise=dict(ep.noise)))
    trajectories = run_episodes(runs, policy, candidate_rollout(config, rollout), concurrency, on_done=on_done)
    candidates = []
    for i, (traj, fork, steps) in enumerate(zip(trajectories, forks, logs)):
        candidates.append(Candidate(index=i % config.k + 1, trajectory=traj, state_hash=fork.state_hash(), steps=steps))
        fork.close()
    return [candidates[i:i + config.k] for i in range(0, len(candidates), config.k)]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"...[{len(text) - limit} more chars]"


def render_steps(steps: Sequence[CandidateStep], answer: str, result_chars: int = 200) -> list[str]:
    """An episode compressed to lines: its calls with cut results, the user's replies, and its final answer."""
    lines = []
    for step in steps:
        if step.call is not None:
            args = json.dumps(step.call.arguments, separators=(",", ":"), default=str)
            lines.append(f"- call {step.call.name} {args} -> {_cut(step.text, result_chars)}")
        else:
            lines.append(f"- user: {step.text}")
    lines.append(f"- final answer: {answer or '(none)'}")
    return lines


def render_candidate(candidate: Candidate, result_chars: int = 200) -> str:
    """A candidate compressed for the summary: a header, then `render_steps`."""
    header = CANDIDATE_HEADER.format(index=candidate.index, n_calls=len(candidate.actions),
                                     termination=candidate.trajectory.termination)
    return "\n".join([header, *render_steps(candidate.steps, candidate.answer, result_chars)])


def task_messages(ep: Episode, rollout: RolloutConfig | None = None) -> list[dict[str, Any]]:
    """The episode's conversation as the agent starts it: the system prompt and the user's request."""
    rollout = rollout or RolloutConfig()
    title = env_title(ep.task, ep.env)
    return [{"role": "system", "content": rollout.system_prompt.format(title=title)},
            {"role": "user", "content": ep.task.instruction}]


def summary_messages(ep: Episode, candidates: list[Candidate], config: AgenticHeavyConfig,
                     rollout: RolloutConfig | None = None) -> list[dict[str, Any]]:
    """The summary model's conversation: the agent's system prompt, then `SUMMARY_PROMPT` over the K candidates."""
    system, request = task_messages(ep, rollout)
    template = CHOICE_PROMPT if config.choice_tool else SUMMARY_PROMPT
    prompt = template.format(request=request["content"], k=len(candidates), result_chars=config.result_chars,
                                   candidates="\n\n".join(render_candidate(c, config.result_chars) for c in candidates))
    return [system, {"role": "user", "content": prompt}]


def _chosen(n: Any, k: int, source: str) -> Decision:
    """A choice of candidate `n` (an integer, or digits in a string as some models quote numbers) if it exists."""
    if isinstance(n, str) and n.strip().isdigit():
        n = int(n)
    if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= k:
        return Decision(kind="choice", chosen=n)
    return Decision(kind="fallback", reason=f"{source} names no candidate (1..{k}): {n!r}")


def parse_summary(text: str, k: int, native_tool_calls: list[dict[str, Any]] | None = None) -> Decision:
    """Read the summary's output: `<choice>N</choice>` or a `choose_candidate` call wins; else its tool calls and
    answer; else kind 'fallback' with the reason (malformed call, out-of-range or malformed choice, or empty output)
    and no choice yet."""
    visible = strip_thinking(text)
    match = _CHOICE.search(visible)
    if match:
        return _chosen(int(match.group(1)), k, "<choice>")
    if "<choice" in visible:
        return Decision(kind="fallback", reason="malformed <choice> tag")
    if native_tool_calls:
        calls, errors = parse_native(native_tool_calls)
        parsed = ParsedTurn(content=visible, tool_calls=calls, errors=errors)
    else:
        parsed = parse_assistant(text)
    choices = [c for c in parsed.tool_calls if c.name == CHOICE_TOOL]
    if choices:
        return _chosen(choices[0].arguments.get("candidate"), k, CHOICE_TOOL)
    if parsed.errors:
        return Decision(kind="fallback", reason="; ".join(parsed.errors))
    if not parsed.tool_calls and not parsed.content:
        return Decision(kind="fallback", reason="empty summary output")
    return Decision(kind="composed", calls=parsed.tool_calls, answer=parsed.content)


def majority_choice(candidates: list[Candidate]) -> int:
    """Self-consistency: the candidate whose final database state is the most common; a tie goes to the most
    common final answer among the tied candidates, then to the lowest index. Returns its 1-based index."""
    states = Counter(c.state_hash for c in candidates)
    top = max(states.values())
    pool = [c for c in candidates if states[c.state_hash] == top]
    answers = Counter(" ".join(c.answer.split()).lower() for c in pool)
    return min(pool, key=lambda c: (-answers[" ".join(c.answer.split()).lower()], c.index)).index


def _candidate_info(c: Candidate) -> CandidateInfo:
    t = c.trajectory
    return CandidateInfo(index=c.index, state_hash=c.state_hash, passed_on_fork=t.passed, termination=t.termination,
                         n_turns=t.n_turns, n_tokens=t.n_tokens, n_tool_calls=t.n_tool_calls)


def commit(ep: Episode, candidates: list[Candidate], decision: Decision, method: str,
           prompt: list[dict[str, Any]], output: str, retries: int = 3, extra_turns: Sequence[TurnRecord] = (),
           extra_segments: Sequence[TokenSegment] = (), error: str | None = None) -> HeavyOutcome:
    """Replay the decided calls on the real environment in order, verify it with the final answer, and record it all.

    The trajectory's messages are `prompt`, the decision `output` (its message also carries the record under
    "heavy") and one tool message per committed call; its turns and segments are the candidates' plus `extra_*`."""
    if decision.chosen is not None:
        chosen = candidates[decision.chosen - 1]
        plan: list[tuple[ToolCall, int | None]] = [(call, chosen.index) for call in chosen.actions]
        answer = chosen.answer
    else:
        plan, answer = [(call, None) for call in decision.calls], decision.answer
    committed = []
    for call, source in plan:
        for attempt in range(1, retries + 2):
            result, ran = call_tool(ep.env, call.name, call.arguments)
            if ran:
                break
        committed.append(CommittedCall(call=call, result=result.text(), attempts=attempt, candidate=source))
    record = HeavyRecord(method=method, k=len(candidates), decision=decision, committed=committed,
                         candidates=[_candidate_info(c) for c in candidates])
    verdict = verify_episode(ep.task, ep.env, answer)
    messages = [*prompt, {"role": "assistant", "content": output, "heavy": record.model_dump(mode="json")},
                *({"role": "tool", "name": c.call.name, "content": c.result} for c in committed)]
    trajectory = Trajectory(
        task_id=ep.task.id, domain=ep.task.domain, trial=ep.trial, noise=dict(ep.noise), messages=messages,
        segments=[s for c in candidates for s in c.trajectory.segments] + list(extra_segments),
        turns=[t for c in candidates for t in c.trajectory.turns] + list(extra_turns),
        final_answer=answer, n_tool_calls=len(committed), passed=verdict.passed, reward=verdict.reward,
        progress=chain_progress(ep.task.gold_chain, [c.call for c in committed]), verdict=verdict.explain(), error=error)
    return HeavyOutcome(trajectory=trajectory, record=record)


def _summarize_batch(policy: Policy, requests: list[GenerationRequest], sampling: SamplingParams
                     ) -> tuple[list[Completion | None], str | None]:
    """One batched summary call; a failure leaves every completion None and returns the error."""
    try:
        return list(policy.generate(requests, sampling)), None
    except Exception as exc:  # noqa: BLE001 - a failed summary batch falls back per episode, the run goes on
        return [None] * len(requests), f"summary generation failed: {type(exc).__name__}: {exc}"


@dataclass
class SummaryRequest:
    """One summary turn to sample: the prompt's messages, the request, and (tokenized) the tracker of its tokens."""

    messages: list[dict[str, Any]]
    request: GenerationRequest
    tracker: TokenTracker | None = None


def summary_request(ep: Episode, candidates: list[Candidate], config: AgenticHeavyConfig,
                    rollout: RolloutConfig | None = None, tokenizer: Any = None) -> SummaryRequest:
    """The summary turn of one episode: its prompt, offered the environment's tools (or only `choose_candidate`
    with `config.choice_tool`), tokenized with `tokenizer` when given so that the sampled tokens can be trained."""
    messages = summary_messages(ep, candidates, config, rollout)
    tools = [choice_tool(len(candidates))] if config.choice_tool else ep.env.openai_tools()
    tracker = TokenTracker(tokenizer, tools) if tokenizer is not None else None
    prompt_ids = tracker.start(messages) if tracker is not None else None
    return SummaryRequest(messages=messages, tracker=tracker,
                          request=GenerationRequest(messages=messages, tools=tools, prompt_ids=prompt_ids))


def decide(ep: Episode, candidates: list[Candidate], summary: SummaryRequest, completion: Completion | None,
           config: AgenticHeavyConfig, error: str | None = None, method: str = "heavy") -> HeavyOutcome:
    """Stage 3 for one episode: parse the summary's completion (None: its generation failed with `error`), fall
    back to the self-consistency choice when unusable, commit, and record the summary's turn and tokens."""
    text = completion.text if completion is not None else ""
    if completion is None:
        decision = Decision(kind="fallback", reason=error)
    else:
        decision = parse_summary(text, len(candidates), completion.tool_calls)
    if decision.kind == "fallback":
        decision.chosen = majority_choice(candidates)
    turns, segments = [], []
    if completion is not None:
        turns.append(TurnRecord(index=0, version=completion.version, n_tokens=len(completion.token_ids),
                                finish_reason=completion.finish_reason, tool_calls=decision.calls,
                                parse_error=decision.reason))
        if summary.tracker is not None:
            summary.tracker.add_sampled(completion.token_ids, completion.logprobs, completion.version)
            segments = summary.tracker.segments
    return commit(ep, candidates, decision, method, summary.messages, text, config.commit_retries, turns, segments,
                  error)


def summarize(episodes: Sequence[Episode], candidates: list[list[Candidate]], summary_policy: Policy,
              config: AgenticHeavyConfig, rollout: RolloutConfig | None = None, method: str = "heavy"
              ) -> list[HeavyOutcome]:
    """Stage 2 + 3: prompt the summary policy over each episode's candidates (batched), then commit its decision."""
    rollout = rollout or RolloutConfig()
    sampling = SamplingParams(temperature=config.summary_temperature, max_new_tokens=config.summary_max_new_tokens,
                              seed=config.seed)
    tokenizer = getattr(summary_policy, "tokenizer", None)
    summaries = [summary_request(ep, cands, config, rollout, tokenizer) for ep, cands in zip(episodes, candidates)]
    completions: list[Completion | None] = []
    errors: list[str | None] = []
    for start in range(0, len(summaries), rollout.max_batch):
        batch, error = _summarize_batch(summary_policy, [s.request for s in summaries[start:start + rollout.max_batch]],
                                        sampling)
        completions += batch
        errors += [error] * len(batch)
    return [decide(ep, cands, summary, completion, config, error, method)
            for ep, cands, summary, completion, error in zip(episodes, candidates, summaries, completions, errors)]


def run_agentic_heavy(episodes: Sequence[Episode], policy: Policy, config: AgenticHeavyConfig | None = None,
                      rollout: RolloutConfig | None = None, summary_policy: Policy | None = None,
                      concurrency: int = 64) -> list[HeavyOutcome]:
    """Agentic Heavy Thinking on each episode: K forked candidates, one summary (default: `policy`), one commit."""
    config = config or AgenticHeavyConfig()
    candidates = run_candidates(episodes, policy, config, rollout, concurrency)
    return summarize(episodes, candidates, summary_policy or policy, config, rollout)
