"""Reverse task synthesis: execute chains in an environment, record the final state and the facts the user must be
told, then write the instruction and user profile from the executed steps."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from toolgym.domains.model import Domain
from toolgym.envs.chain import ChainExecutor, ChainFailed, ExecutedStep, plan_chain
from toolgym.envs.environment import Environment, ToolCall
from toolgym.envs.graph import UNREACHABLE, ToolGraph
from toolgym.envs.state import diff, state_hash
from toolgym.tasks.model import Difficulty, Task, UserProfile
from toolgym.tasks.text import ChainDescriber, fmt, words
from toolgym.tasks.verify import verify

TARGET_KINDS = {"get": 1.0, "find": 0.5, "create": 1.0, "update": 2.0, "transition": 2.5, "action": 3.0}


@dataclass(frozen=True)
class SynthesisConfig:
    target_counts: tuple[int, ...] = (1, 2, 3)
    target_weights: tuple[float, ...] = (0.6, 0.3, 0.1)
    attempts: int = 60
    ask_return_p: float = 0.5
    max_calls_per_target: int | None = None
    """Longest chain (the target and the lookups it depends on) a target may need; None for no limit. The
    capability axis of a curriculum: short chains first, without paying to synthesize tasks only to discard them."""
    lookups: bool = False
    """Also target reads that need no earlier call (a find by a key the user states, then a question about the row):
    the single-call tasks of the basic tier. Off, a read target needs at least one lookup before it."""

    def __post_init__(self) -> None:
        if self.max_calls_per_target is not None and self.max_calls_per_target < 1:
            raise ValueError(f"max_calls_per_target must be at least 1 (or None), got {self.max_calls_per_target}")


class SynthesisFailed(RuntimeError):
    """No executable chain could be found for a task in this environment."""


def _segment_text(domain: Domain, describer: ChainDescriber, steps: list[ExecutedStep], rng: random.Random,
                  config: SynthesisConfig) -> tuple[str, list[str]]:
    """One sentence for the chain's target, plus the facts the answer must contain."""
    target = steps[-1]
    tool = domain.tools[target.tool]
    if not tool.writes:
        row = target.result
        subject = describer.row(len(steps) - 1, None, tool.entity)
        skip = set(target.args) | {"id"}
        choices = [k for k, v in row.items()
                   if k not in skip and v is not None and not k.endswith("_id") and fmt(v) not in subject]
        if not choices:
            raise ChainFailed(f"nothing left to ask about {subject}")
        field = rng.choice(sorted(choices))
        return f"Could you tell me the {words(field)} of {subject}?", [fmt(row[field])]
    sentence = f"Please {describer.intent(target)}."
    answers: list[str] = []
    if tool.kind == "action" and rng.random() < config.ask_return_p:
        facts = [k for k, v in (target.result or {}).items()
                 if v is not None and not k.endswith("_id") and k != "ok" and not isinstance(v, bool)]
        if facts:
            key = rng.choice(sorted(facts))
            sentence += f" Tell me the {words(key)} afterwards."
            answers.append(fmt(target.result[key]))
    return sentence, answers


def _profile(domain: Domain, env: Environment, steps: list[ExecutedStep]) -> UserProfile:
    """The persona whose identifying facts the chain used: those are stated; their other facts come on request."""
    profile = UserProfile()
    for step in steps:
        for name, origin in step.origins.items():
            if origin.kind != "row" or not domain.entities[origin.entity].persona:
                continue
            entity = domain.entities[origin.entity]
            row = env.reader.execute(f'SELECT * FROM "{entity.name}" WHERE "id" = ?', (origin.row_id,)).fetchone()
            profile.persona = entity.name
            profile.name = str(row[entity.label]) if entity.label else None
            profile.known[origin.field] = step.args[name]
            for f in entity.fields:
                if f.knowable and f.name not in profile.known and f.name != entity.label:
                    profile.on_request[f.name] = row[f.name]
    for k in profile.known:
        profile.on_request.pop(k, None)
    return profile


def synthesize_task(env: Environment, seed: int, config: SynthesisConfig | None = None,
                    task_id: str | None = None) -> Task:
    """Make one task in `env` (deterministic in `seed`); raises SynthesisFailed if no chain executes."""
    config = config or SynthesisConfig()
    rng = random.Random(seed)
    domain = env.domain
    graph = ToolGraph(domain, env.tool_names)
    limit = config.max_calls_per_target if config.max_calls_per_target is not None else UNREACHABLE
    targets = [t for t in env.tool_names
               if graph.depth[t] < min(UNREACHABLE, limit) and domain.tools[t].kind in TARGET_KINDS
               and (domain.tools[t].writes or graph.depth[t] > 0 or config.lookups)]
    if not targets:
        raise SynthesisFailed(f"environment {env.id} has no tool to build a task on")
    weights = [TARGET_KINDS[domain.tools[t].kind] for t in targets]
    n_targets = rng.choices(config.target_counts, weights=config.target_weights)[0]
    work = env.fork()
    initial = work.snapshot()
    segments: list[list[ExecutedStep]] = []
    sentences: list[str] = []
    answers: list[str] = []
    memory: dict[str, int] = {}
    for _ in range(n_targets):
        used = {seg[-1].tool for seg in segments}
        fresh = [(t, w) for t, w in zip(targets, weights) if t not in used]
        if not fresh:
            break
        before = work.snapshot() if segments else initial
        for _ in range(config.attempts):
            plan = plan_chain(graph, rng.choices([t for t, _ in fresh], weights=[w for _, w in fresh])[0], rng)
            if len(plan.steps) > limit:
                continue
            trial = work.fork()
            try:
                steps = ChainExecutor(domain, trial.call_or_raise, trial.random_row, rng, memory).run(plan)
                sentence, facts = _segment_text(domain, ChainDescriber(domain, steps), steps, rng, config)
                after = trial.snapshot()
                if domain.tools[steps[-1].tool].writes and not diff(before, after):
                    raise ChainFailed("the write changed nothing")
                if not answers and not facts and not diff(initial, after):
                    raise ChainFailed("the task so far changes nothing and asks nothing: doing nothing would pass")
            except ChainFailed:
                trial.close()
                continue
            work.close()
            work = trial
            segments.append(steps)
            sentences.append(sentence)
            answers.extend(facts)
            break
    if not segments:
        work.close()
        raise SynthesisFailed(f"no executable chain found in environment {env.id} (seed {seed})")
    final = work.snapshot()
    work.close()
    profile = UserProfile()
    for steps in segments:
        seg_profile = _profile(domain, env, steps)
        if seg_profile.persona and not profile.persona:
            profile = seg_profile
        elif seg_profile.persona == profile.persona and seg_profile.name == profile.name:
            for k, v in seg_profile.known.items():
                profile.known.setdefault(k, v)
    for k in profile.known:
        profile.on_request.pop(k, None)
    intro = _intro(profile)
    gold = [ToolCall(name=s.tool, arguments=_json_args(s.args)) for seg in segments for s in seg]
    task = Task(
        id=task_id or f"{env.id}-t{seed}",
        domain=domain.name,
        seed=seed,
        env=env.record(),
        instruction=" ".join([intro, *sentences]).strip(),
        user=profile,
        gold_chain=gold,
        expected_changes=diff(initial, final),
        expected_state_hash=state_hash(final),
        required_answers=answers,
        difficulty=Difficulty(chain_length=len(gold), n_writes=sum(domain.tools[c.name].writes for c in gold),
                              n_env_tools=len(env.tool_names), n_targets=len(segments)),
    )
    if passes_untouched(task, env):
        raise SynthesisFailed(f"task {task.id} would pass with no action and an empty answer")
    return task


def passes_untouched(task: Task, env: Environment) -> bool:
    """Whether the task's verifier passes `env` as it is (untouched by any agent) with an empty answer: such a task
    rewards doing nothing, so synthesis rejects it."""
    untouched = env.fork()
    try:
        return verify(task, untouched, "").passed
    finally:
        untouched.close()


def _intro(profile: UserProfile) -> str:
    if not profile.persona:
        return ""
    facts = " and ".join(f"my {words(k)} is {fmt(v)}" for k, v in profile.known.items() if k != "name")
    who = f"Hi, I'm {profile.name}." if profile.name else "Hi."
    return f"{who} {facts[0].upper() + facts[1:]}." if facts else who


def _json_args(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if v is not None}


def synthesize_tasks(envs: Iterator[Environment], per_env: int, seed: int) -> Iterator[Task]:
    """Tasks for a stream of environments; environments where synthesis fails are skipped."""
    rng = random.Random(seed)
    for env in envs:
        for _ in range(per_env):
            try:
                yield synthesize_task(env, rng.getrandbits(32))
            except SynthesisFailed:
                continue
