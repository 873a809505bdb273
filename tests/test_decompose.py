"""Decomposition augmentation: tool decomposition (a hidden identifying value behind a lookup by another field, verified
by execution) and reasoning decomposition (candidates rejected for what executing them showed)."""

from __future__ import annotations

import json
import random
import re

import pytest

from toolgym.agent.toolcall import format_tool_call, parse_assistant
from toolgym.envs.environment import Environment
from toolgym.envs.families import open_env, replay, verify_episode
from toolgym.sft.data import _fresh_like, sft_example, sft_examples
from toolgym.sft.decompose import decompose_task, reasoned_plan
from toolgym.tasks.text import fmt, words
from toolgym.tasks.verify import gold_answer


def _says(text, value):
    return any(re.search(rf"(?<![\w.-]){re.escape(f)}(?![\w]|\.\d)", text, re.IGNORECASE)
               for f in {str(value), fmt(value)})


def _flat(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flat(v)]
    if isinstance(value, list):
        return [x for v in value for x in _flat(v)]
    return [value]


@pytest.fixture(scope="module")
def decomposed(tasks, sampled):
    """(domain, original task, its environment, decomposed task or None) for every fixture task."""
    return [(name, task, env, decompose_task(task, env, seed=0))
            for name in sorted(tasks) for task, env in zip(tasks[name], sampled[name])]


def _hidden(task, new):
    """The first-call values the original instruction states and the decomposed one no longer does."""
    return [v for v in task.gold_chain[0].arguments.values() if _says(task.instruction, v)
            and not _says(new.instruction, v)]


def _agent_run(task, calls, wrong):
    """Run `calls` as an agent that can only copy what it has read: `wrong` maps a value it never learned to the
    guess it makes instead; any other argument (or answer fact) it has not read is guessed wrong as well."""
    env = open_env(task.env)
    seen = " ".join([task.instruction, *map(str, task.user.known.values()), *map(str, task.user.on_request.values())])
    try:
        for call in calls:
            args = {}
            for key, value in call.arguments.items():
                value = wrong.get(value, value) if isinstance(value, str) else value
                if not isinstance(value, bool) and not _says(seen, value) and not _choice(env, call.name, key):
                    guess = _fresh_like(str(value), random.Random(1))
                    value = value + 10**6 if isinstance(value, int | float) else guess
                args[key] = value
            result = env.call(call.name, args)
            seen += " " + result.text() + " " + " ".join(fmt(v) for v in _flat(result.content))
        answer = "; ".join(fact if _says(seen, fact) else "unknown" for fact in task.required_answers)
        return verify_episode(task, env, answer).passed
    finally:
        env.close()


def _choice(env, tool, param):
    return bool(next(p for p in env.domain.tools[tool].params if p.name == param).values)


def test_decomposed_tasks_hide_a_value_behind_a_lookup_and_need_it(decomposed):
    per_domain = {}
    for name, task, env, new in decomposed:
        per_domain[name] = per_domain.get(name, 0) + (new is not None)
        if new is None:
            continue
        assert new.id != task.id and new.expected_state_hash == task.expected_state_hash
        assert new.expected_changes == task.expected_changes and new.required_answers == task.required_answers
        assert len(new.gold_chain) == len(task.gold_chain) + 1 and new.gold_chain[1:] == task.gold_chain
        hidden = _hidden(task, new)
        assert len(hidden) == 1, (task.instruction, new.instruction)
        value = hidden[0]
        # the lookup: a read of the environment by a value the user now states, whose result holds the hidden value
        lookup = new.gold_chain[0]
        tool = env.tools[lookup.name]
        assert not tool.writes and tool.kind in ("find", "search")
        stated = " ".join([new.instruction, *map(str, new.user.known.values())])
        assert lookup.arguments and all(_says(stated, v) for v in lookup.arguments.values())
        probe = env.fork()
        result = probe.call(lookup.name, lookup.arguments)
        probe.close()
        assert result.ok and value in _flat(result.content)
        # nothing the agent can read states the hidden value
        readable = [new.instruction, str(new.user.name), *map(str, new.user.known.values()),
                    *map(str, new.user.on_request.values())]
        assert not any(_says(text, value) for text in readable)
        assert replay(new, new.gold_chain, gold_answer(new)).passed
        # an agent that reads before it copies solves it with the lookup, and fails without it once it must guess
        assert _agent_run(task, task.gold_chain, {}) and _agent_run(new, new.gold_chain, {})
        wrong = _fresh_like(str(value), random.Random(0))
        assert wrong != value
        assert not _agent_run(new, task.gold_chain, {value: wrong})
    assert sum(per_domain.values()) >= 5
    assert sum(1 for n in per_domain.values() if n) >= 4, per_domain


def test_decomposition_is_deterministic_and_declines_what_it_cannot_hide(decomposed):
    done = [(task, env, new) for _, task, env, new in decomposed if new is not None]
    task, env, new = done[0]
    assert decompose_task(task, env, seed=0) == new
    assert decompose_task(task, Environment.from_record(task.env), seed=0) == new
    # nothing to hide: the instruction states none of the first call's values
    vague = task.model_copy(update={"instruction": "Please take care of my request."})
    assert decompose_task(vague, env, seed=0) is None
    # the hidden value said a second time in words the rewrite does not know: no broken instruction comes out
    value = _hidden(task, new)[0]
    leaky = task.model_copy(update={"instruction": f"{task.instruction} (ref {value})"})
    assert decompose_task(leaky, env, seed=0) is None
    # without the lookup tool in the environment there is no decomposition through it
    fewer = Environment(env.domain, [t for t in env.tool_names if t != new.gold_chain[0].name], env.data_seed, env.id)
    other = decompose_task(task, fewer, seed=0)
    assert other is None or other.gold_chain[0].name != new.gold_chain[0].name
    # a task whose first call is a search by a field many rows share has no identifying value to hide
    shared = [t for _, t, e, _ in decomposed if e.tools[t.gold_chain[0].name].kind == "search"
              and all(len(e.reader.execute(f'SELECT 1 FROM "{e.tools[t.gold_chain[0].name].entity}" WHERE "{k}" = ?',
                                           (v,)).fetchall()) > 1 for k, v in t.gold_chain[0].arguments.items())]
    assert shared
    for t in shared[:5]:
        assert decompose_task(t, Environment.from_record(t.env), seed=0) is None


def _plans(tasks, per_domain=2):
    """(env before the call, call, plan) at every gold call of a few tasks per domain."""
    out = []
    for name in sorted(tasks):
        for i, task in enumerate(tasks[name][:per_domain]):
            env = Environment.from_record(task.env)
            text = task.instruction
            for j, call in enumerate(task.gold_chain):
                plan = reasoned_plan(call, env, text, random.Random(i * 100 + j))
                out.append((env.fork(), call, plan))
                text += "\n" + env.call(call.name, call.arguments).text()
            env.close()
    return out


def test_reasoned_plan_rejects_candidates_for_what_executing_them_shows(tasks):
    errors = missing = 0
    for env, call, plan in _plans(tasks):
        thinking = parse_assistant(plan + format_tool_call(call)).thinking
        assert plan.startswith("<think>") and thinking.strip().endswith(f"Next step: {call.name}.")
        names = re.match(r"Candidates: (.*)\.\n", thinking).group(1).split(", ")
        assert call.name in names and 2 <= len(names) <= 3 and len(set(names)) == len(names)
        assert f"- {call.name}: yes, " in thinking
        for name in names:
            if name == call.name:
                continue
            assert name in env.tool_names
            line = next(ln for ln in thinking.splitlines() if ln.startswith(f"- {name} "))
            args, end = json.JSONDecoder().raw_decode(line, len(f"- {name} "))
            reason = line[end:]
            assert reason.startswith(": no, ") and len(reason) > len(": no, .")
            tool = env.tools[name]
            fork = env.fork()
            result = fork.call(name, args)
            fork.close()
            absent = [p.name for p in tool.params if p.required and p.name not in args]
            if absent:
                missing += 1
                assert all(words(p) in reason for p in absent)
            if not result.ok:
                errors += not absent
                assert result.error in reason
            else:
                assert tool.writes or env.tools[call.name].writes
                assert "change" in reason
                if tool.writes and "id" in result.content:
                    assert f"{words(tool.entity)} {result.content['id']}" in reason
    assert errors > 0 and missing > 0


def test_reasoned_plans_precede_every_gold_call_and_leave_the_episode_unchanged(tasks):
    some = [t for name in sorted(tasks) for t in tasks[name][:1]]
    for seed, task in enumerate(some):
        reasoned = sft_example(task, seed, fail_p=0.5, reason_p=1.0)
        trained = [m for m, keep in zip([m for m in reasoned.messages if m["role"] == "assistant"], reasoned.train)
                   if keep][:-1]
        assert [parse_assistant(m["content"]).tool_calls[0] for m in trained] == task.gold_chain
        for message, call in zip(trained, task.gold_chain):
            thinking = parse_assistant(message["content"]).thinking
            assert thinking.strip().endswith(f"Next step: {call.name}.") and ": no, " in thinking
        plain = sft_example(task, seed, fail_p=0.0, plan_p=0.0)
        reasoned_clean = sft_example(task, seed, fail_p=0.0, plan_p=0.0, reason_p=1.0)
        tool_text = [[m["content"] for m in ex.messages if m["role"] == "tool"] for ex in (plain, reasoned_clean)]
        assert tool_text[0] == tool_text[1]
        assert sft_example(task, seed, reason_p=0.0) == sft_example(task, seed)
    assert list(sft_examples(some, seed=3, reason_p=0.0)) == list(sft_examples(some, seed=3))
