"""Decomposition augmentation (LongCat-Flash-Thinking report), grounded in executed environments.

Tool decomposition (`decompose_task`): a task whose first call takes an identifying value the user states (a
flight number, an email) becomes a task where the user states a different identifying field of the same row (the
phone instead of the email), so the agent must first look the row up by that field to learn the value the original
call needs. The new task keeps the original target, expected state and answers; its gold chain is the lookup
followed by the original chain. It is kept only if its gold chain replays to a pass, the hidden value appears
nowhere the agent can read it (instruction, user profile), and the original chain, run by an agent that can only
use values it has read, fails once the hidden value is guessed wrong.

Reasoning decomposition (`reasoned_plan`): at a decision point a <think> lists a few candidate tools; each rejected
one is tried on a fork of the environment with the arguments at hand, and the reason it is rejected is what that
execution showed (the error the environment returned, a required value nobody gave, a write where none is asked);
the chosen tool gets the reason it fits.
"""

from __future__ import annotations

import json
import random
import re
import string
from typing import Any

from toolgym.domains.model import Tool
from toolgym.envs.environment import Environment, ToolCall, ToolResult
from toolgym.envs.families import open_env, replay, verify_episode
from toolgym.tasks.model import Task, UserProfile
from toolgym.tasks.text import fmt, words
from toolgym.tasks.verify import gold_answer

DECOMPOSED_SUFFIX = "-decomposed"
_PLAIN_TYPES = ("str", "int", "date", "datetime")
"""Field types a user can state to identify a row (not bools, enums, floats or references)."""


def _forms(value: Any) -> set[str]:
    return {f for f in {str(value), fmt(value)} if f}


def mentions(text: str, value: Any) -> bool:
    """Whether `text` states `value` as a whole word, number or code (case-insensitive), raw or as `fmt` says it."""
    return any(re.search(rf"(?<![\w.-]){re.escape(f)}(?![\w]|\.\d)", text, re.IGNORECASE) for f in _forms(value))


def _row_where(env: Environment, entity: str, column: str, value: Any) -> list[dict[str, Any]]:
    rows = env.reader.execute(f'SELECT * FROM "{entity}" WHERE "{column}" = ? LIMIT 2', (value,)).fetchall()
    return [dict(r) for r in rows]


def _hidden_args(task: Task, env: Environment) -> list[tuple[str, str, str, Any, dict[str, Any]]]:
    """(argument, entity, field, value, row) for each argument of the first gold call that identifies an existing row
    (an id, or a field unique in its entity) and whose value the instruction states verbatim."""
    if not task.gold_chain or task.gold_chain[0].name not in env.domain.tools:
        return []
    call = task.gold_chain[0]
    tool = env.domain.tools[call.name]
    found = []
    for name, value in sorted(call.arguments.items()):
        param = next((p for p in tool.params if p.name == name), None)
        if param is None or not param.semantic or isinstance(value, bool) or value is None:
            continue
        entity, _, field = param.semantic.partition(".")
        spec = env.domain.entities.get(entity)
        if spec is None:
            continue
        unique = field == "id" or any(f.name == field and f.unique for f in spec.fields)
        if not unique or not mentions(task.instruction, value):
            continue
        rows = _row_where(env, entity, field, value)
        if len(rows) == 1:
            found.append((name, entity, field, value, rows[0]))
    return found


def _other_keys(env: Environment, entity: str, field: str, row: dict[str, Any], hidden: Any) -> list[tuple[str, Any]]:
    """Knowable fields of `row` other than `field` whose value is unique in the table (and does not contain the
    hidden value): what a user could state instead to identify the same row."""
    spec = env.domain.entities[entity]
    keys = []
    for f in spec.fields:
        value = row.get(f.name)
        if (f.name == field or not f.knowable or f.type not in _PLAIN_TYPES or value is None or value == ""
                or mentions(fmt(value), hidden)):
            continue
        if len(_row_where(env, entity, f.name, value)) == 1:
            keys.append((f.name, value))
    return keys


def _lookup_tools(env: Environment, entity: str, field: str) -> list[Tool]:
    """Read tools of the environment that find `entity`'s rows by `field`: find-by-field tools and searches."""
    return [t for t in env.tools.values() if t.entity == entity and not t.writes
            and ((t.kind == "find" and t.field == field)
                 or (t.kind == "search" and any(p.name == field for p in t.params)))]


def _found_row(tool: Tool, result: ToolResult) -> dict[str, Any] | None:
    """The one row a successful lookup returned (None when it failed or a search matched several)."""
    if not result.ok or not isinstance(result.content, dict):
        return None
    if tool.returns_list:
        items = result.content.get("items") or []
        return items[0] if len(items) == 1 else None
    return result.content


def _rewrite(text: str, names: list[str], value: Any, new_name: str, new_value: Any, introduced: bool) -> str:
    """`text` with each "<name> <value>" phrase (and "my <name> is <value>") saying `new_name` and `new_value`.
    When `introduced` (the new fact is the name the user already introduced themselves with: "Hi, I'm ..."), the
    hidden fact is dropped from the introduction instead of restating the name."""
    old = "|".join(sorted({re.escape(f) for f in _forms(value)}, key=len, reverse=True))
    new = f"{words(new_name)} is {re.escape(fmt(new_value))}"
    for name in names:
        label = re.escape(words(name))
        text = re.sub(rf"\b([Mm]y) {label} is (?:{old})(?![\w]|\.\d)",
                      lambda m: f"{m.group(1)} {words(new_name)} is {fmt(new_value)}", text)
        text = re.sub(rf"\b{label} (?:{old})(?![\w]|\.\d)", lambda _: f"{words(new_name)} {fmt(new_value)}", text)
    if introduced:
        text = re.sub(rf" My {new}\.(?= |$)", "", text)
        text = re.sub(rf" and my {new}(?![\w])", "", text)
        text = re.sub(rf"\bMy {new} and my ", "My ", text)
    return text


def _reprofile(user: UserProfile, names: list[str], value: Any, new_name: str, new_value: Any) -> UserProfile:
    """The profile with the hidden fact replaced by the new one, and neither the hidden value nor the new fact left
    to give on request."""
    known: dict[str, Any] = {}
    for k, v in user.known.items():
        if k in names and v == value:
            known[new_name] = new_value
        else:
            known[k] = v
    on_request = {k: v for k, v in user.on_request.items() if k not in known and v != value and k not in names}
    return user.model_copy(update={"known": known, "on_request": on_request})


def _readable(task: Task) -> str:
    """Everything the agent can read before its first call: the instruction and what the user would tell it."""
    return "\n".join([task.instruction, str(task.user.name or ""),
                      *map(str, task.user.known.values()), *map(str, task.user.on_request.values())])


def _must_read(tool: Tool | None, name: str, value: Any) -> bool:
    """Whether an argument value is one an agent must have read somewhere rather than choose: any number or string
    except a value from a fixed list of choices (an enum, a yes/no)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return False
    param = next((p for p in tool.params if p.name == name), None) if tool is not None else None
    return not (param is not None and param.values)


def _wrong_like(value: Any, rng: random.Random) -> Any:
    """A wrong value of the same shape: an int moved out of range of real ids, a string with its digits changed."""
    if isinstance(value, int):
        return value + 10**6
    if isinstance(value, float):
        return value + 1000.0
    text = str(value)
    for _ in range(20):
        new = "".join(rng.choice("123456789") if ch.isdigit() else rng.choice("abcdefghijklmnopqrstuvwxyz")
                      if ch.islower() else rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") if ch.isupper() else ch
                      for ch in text)
        if new != text:
            return new
    return text + "0"


def grounded_run(task: Task, calls: list[ToolCall], rng: random.Random) -> bool:
    """Run `calls` the way an agent that can only copy what it has read would: every argument that is not a fixed
    choice must occur in what the user said or in a result it has seen so far; one that does not is guessed (a wrong
    value of the same shape). The answer states each required fact it has read and guesses the others. Returns
    whether the episode then passes."""
    env = open_env(task.env)
    seen = _readable(task)
    try:
        for call in calls:
            tool = env.domain.tools.get(call.name)
            args = {k: v if not _must_read(tool, k, v) or mentions(seen, v) else _wrong_like(v, rng)
                    for k, v in call.arguments.items()}
            result = env.call(call.name, args)
            seen += "\n" + result.text() + "\n" + " | ".join(fmt(v) for v in _scalars(result.content))
        facts = [f if mentions(seen, f) else _wrong_like(f, rng) for f in task.required_answers]
        return verify_episode(task, env, "Done. " + "; ".join(map(str, facts))).passed
    finally:
        env.close()


def _scalars(value: Any) -> list[Any]:
    """The scalar values inside a tool result (as a user would say them, they may differ from the JSON: 4.50, yes)."""
    out, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif item is not None:
            out.append(item)
    return out


def decompose_task(task: Task, env: Environment, seed: int) -> Task | None:
    """The task with the identifying value of its first call hidden behind a lookup by another field of the same row
    (see the module doc), or None when it has no such value, the environment has no such lookup, the text cannot be
    rewritten cleanly, or the result does not verify by execution. Deterministic in `seed`."""
    if task.env.family != "tool" or task.id.endswith(DECOMPOSED_SUFFIX):
        return None
    rng = random.Random(seed)
    options = []
    for arg, entity, field, value, row in _hidden_args(task, env):
        for key, key_value in _other_keys(env, entity, field, row, value):
            for tool in _lookup_tools(env, entity, key):
                options.append((arg, entity, field, value, row, key, key_value, tool))
    rng.shuffle(options)
    for arg, entity, field, value, row, key, key_value, tool in options:
        lookup = ToolCall(name=tool.name, arguments={key: key_value})
        probe = env.fork()
        try:
            found = _found_row(tool, probe.call(lookup.name, lookup.arguments))
        finally:
            probe.close()
        if found is None or found.get("id") != row["id"] or found.get(field) != value:
            continue
        names = list(dict.fromkeys([field, arg]))
        spec = env.domain.entities[entity]
        introduced = spec.persona and key == spec.label and task.user.name == str(key_value)
        instruction = _rewrite(task.instruction, names, value, key, key_value, introduced)
        user = _reprofile(task.user, names, value, key, key_value)
        decomposed = task.model_copy(update={
            "id": task.id + DECOMPOSED_SUFFIX, "instruction": instruction, "user": user,
            "gold_chain": [lookup, *task.gold_chain],
            "difficulty": task.difficulty.model_copy(update={"chain_length": task.difficulty.chain_length + 1})})
        if instruction == task.instruction or mentions(_readable(decomposed), value) or user.name == value:
            continue
        if not replay(decomposed, decomposed.gold_chain, gold_answer(decomposed)).passed:
            continue
        if not grounded_run(decomposed, decomposed.gold_chain, random.Random(seed)):
            continue
        if grounded_run(decomposed, task.gold_chain, random.Random(seed)):
            continue  # the hidden value was not needed after all
        return decomposed
    return None


def decomposed_tasks(tasks: list[Task], seed: int) -> list[Task]:
    """The decomposed version of every tool-use task in `tasks` that has one (task i decomposed with a seed drawn
    from `seed` and i), in order."""
    found = []
    for i, task in enumerate(tasks):
        if task.env.family != "tool":
            continue
        env = Environment.from_record(task.env)
        try:
            decomposed = decompose_task(task, env, seed * 1_000_003 + i)
        finally:
            env.close()
        if decomposed is not None:
            found.append(decomposed)
    return found


# --- reasoning decomposition ---------------------------------------------------------------------------------------

_JSON_PAIR = re.compile(r'"(\w+)": ("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?)')


def _context_values(text: str) -> dict[str, Any]:
    """Scalar values the conversation's tool results carried, by key (the latest wins)."""
    values: dict[str, Any] = {}
    for key, raw in _JSON_PAIR.findall(text):
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            continue
    return values


def _stated_value(env: Environment, semantic: str | None, text: str) -> Any:
    """A value of the column `semantic` ("entity.field") that occurs in `text`, found by scanning the column's values
    in the database; None when none does."""
    entity, _, field = (semantic or "").partition(".")
    spec = env.domain.entities.get(entity)
    if spec is None or field == "id" or not any(f.name == field and f.type != "ref" for f in spec.fields):
        return None
    for (value,) in env.reader.execute(f'SELECT DISTINCT "{field}" FROM "{entity}" WHERE "{field}" IS NOT NULL'):
        if any(form in text for form in _forms(value)) and mentions(text, value):
            return value
    return None


def _available_args(tool: Tool, call: ToolCall, gold: Tool, context: dict[str, Any], env: Environment,
                    text: str) -> dict[str, Any]:
    """Arguments for `tool` from what is at hand: the chosen call's arguments (by name or by meaning), values earlier
    tool results carried under the parameter's name, then a value of the parameter's column the conversation states."""
    by_semantic = {p.semantic: call.arguments[p.name] for p in gold.params if p.name in call.arguments and p.semantic}
    args = {}
    for p in tool.params:
        if p.name in call.arguments:
            args[p.name] = call.arguments[p.name]
        elif p.semantic in by_semantic:
            args[p.name] = by_semantic[p.semantic]
        elif p.required and p.name in context:
            args[p.name] = context[p.name]
        elif p.required and (value := _stated_value(env, p.semantic, text)) is not None:
            args[p.name] = value
    return args


def _summary(tool: Tool, result: ToolResult) -> str:
    content = result.content
    if tool.returns_list and isinstance(content, dict):
        n = len(content.get("items") or [])
        return f"{n} {words(tool.entity or 'row')} row{'s' if n != 1 else ''}"
    if isinstance(content, dict) and "id" in content and tool.entity:
        return f"{words(tool.entity)} {content['id']}"
    ids = [(k, v) for k, v in (content or {}).items() if k.endswith("_id")] if isinstance(content, dict) else []
    if ids:
        return f"{words(ids[0][0].removesuffix('_id'))} {ids[0][1]}"
    return f"what {words(tool.name)} touches"


def _safe(text: str) -> str:
    return text.replace("</think>", "</ think>").replace("<tool_call>", "< tool_call>")


def _asked(tool: Tool, text: str) -> bool:
    """Whether the request words the change `tool` makes: the longest fixed part of its intent template occurs."""
    parts = [literal.strip() for literal, *_ in string.Formatter().parse(tool.intent) if literal.strip()]
    return bool(parts) and max(parts, key=len).lower() in text.lower()


def _rejection(tool: Tool, args: dict[str, Any], gold: Tool, env: Environment, text: str) -> str | None:
    """Why `tool`, tried with `args` on a fork of `env`, is not the next step; None when trying it shows nothing
    wrong with it (a read that works may be another way to the same place)."""
    missing = [p.name for p in tool.params if p.required and p.name not in args]
    fork = env.fork()
    try:
        result = fork.call(tool.name, args)
    finally:
        fork.close()
    if missing:
        stated = [p.name for p in tool.params if p.name in missing and p.knowable]
        found = [p.name for p in tool.params if p.name in missing and not p.knowable]
        needs = []
        if found:
            needs.append(f"{' and '.join(f'the {words(m)}' for m in found)} first")
        if stated:
            needs.append(f"{' and '.join(f'the {words(m)}' for m in stated)}, which the request does not give")
        return f"it needs {', and '.join(needs)} (trying it: {result.error or 'no result'})"
    if not result.ok:
        return f"trying it fails: {result.error}"
    if tool.writes and _asked(tool, text):
        return None  # a change the request asks for, whose turn may come later
    if tool.writes and not gold.writes:
        return f"it writes (it would change {_summary(tool, result)}), but the request does not ask for that change"
    if tool.writes:
        return f"it would change {_summary(tool, result)}, a change the request does not ask for"
    if gold.writes:
        return f"it only reads ({_summary(tool, result)}), and everything the change needs is already at hand"
    return None


def _plausibility(tool: Tool, gold: Tool) -> float:
    mine, theirs = set(tool.name.split("_")) - {"by"}, set(gold.name.split("_")) - {"by"}
    score = len(mine & theirs) / max(1, len(mine | theirs))
    score += 1.0 if tool.entity and tool.entity == gold.entity else 0.0
    score += 0.5 if tool.kind == gold.kind else 0.0
    return score


def reasoned_plan(call: ToolCall, env: Environment, conversation_text: str, rng: random.Random) -> str:
    """A <think> that lists 2-3 candidate tools (the chosen call's and plausible others of `env`: same entity,
    similar names), gives each rejected one the reason its execution on a fork of `env` showed, gives the chosen one
    the reason it fits, and ends with `Next step: <tool>.` `env` is left unchanged."""
    gold = env.domain.tools[call.name]
    context = _context_values(conversation_text)
    others = sorted((t for t in env.tool_names if t != call.name),
                    key=lambda t: (-_plausibility(env.tools[t], gold), rng.random()))
    wanted = rng.choice((1, 2))
    rejected: list[tuple[str, dict[str, Any], str]] = []
    for tried, name in enumerate(others):
        if len(rejected) == wanted or (rejected and tried >= 8):
            break
        tool = env.tools[name]
        args = _available_args(tool, call, gold, context, env, conversation_text)
        reason = _rejection(tool, args, gold, env, conversation_text)
        if reason is not None:
            rejected.append((name, args, reason))
    names = sorted([call.name, *(r[0] for r in rejected)], key=lambda _: rng.random())
    lines = [f"Candidates: {', '.join(names)}."]
    order = {name: i for i, name in enumerate(names)}
    for name, args, reason in sorted(rejected, key=lambda r: order[r[0]]):
        lines.append(f"- {name} {json.dumps(args)}: no, {reason}.")
    stated = [f"the {words(k)} {fmt(v)}" for k, v in call.arguments.items() if mentions(conversation_text, v)]
    fits = f"it takes {', '.join(stated)}, given so far" if stated else "it needs nothing the request does not give"
    purpose = (f"and makes the change to the {words(gold.entity or 'record')} the request asks for" if gold.writes
               else f"and reads the {words(gold.entity or 'record')} the request is about")
    lines.append(f"- {call.name}: yes, {fits}, {purpose}.")
    lines.append(f"Next step: {call.name}.")
    return "<think>" + _safe("\n".join(lines)) + "</think>"
