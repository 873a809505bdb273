"""Instruction noise: seeded, levelled imperfections in how the user states a task (typos, paraphrase, an omitted
fact given only when asked, distractors, vaguer wording, self-corrections) that never make the task unsolvable.

Every edit goes through `_edit`, which refuses to cut into or drop a protected value (anything the gold chain,
the user profile or the required answers hold), so the facts needed to solve the task survive verbatim; the only
exception is "omit", which moves its fact into `user.on_request` where the user simulator gives it when asked.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from toolgym.domains import Domain, load_domain
from toolgym.tasks.model import Task, UserProfile
from toolgym.tasks.text import fmt, words

INSTRUCTION_KINDS: tuple[str, ...] = ("omit", "vague", "self_correction", "paraphrase", "distractor", "typo")

PARAPHRASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"\bPlease (?=[a-z])", ("Could you please ", "I need you to ", "I'd like you to ", "Kindly ")),
    (r"\bCould you tell me\b", ("Can you tell me", "Would you tell me", "Can you find out")),
    (r"\bTell me the\b", ("Let me know the", "Please tell me the", "Also tell me the")),
    (r"\bafterwards\b", ("when you're done", "once that's done", "after that")),
    (r"\bchange the\b", ("update the", "set the")),
    (r"\bamong\b", ("out of", "from")),
    (r"\bHi,", ("Hello,", "Hey,", "Good morning,")),
)

DISTRACTORS: tuple[str, ...] = (
    "I'm in a bit of a hurry today.",
    "My cousin also uses this service.",
    "The weather has been lovely here lately.",
    "I've been a customer for quite a while.",
    "Sorry if this is confusing, it has been a long day.",
    "I tried the website earlier but it was really slow.",
)

def protected_values(task: Task) -> set[str]:
    """Texts that must survive noise: every value of the gold arguments, the user profile and the required answers."""
    values: list[Any] = [v for call in task.gold_chain for v in call.arguments.values()]
    values += [*task.user.known.values(), *task.user.on_request.values(), *task.required_answers, task.user.name]
    return {text for v in values if v is not None for text in (fmt(v), str(v)) if text}


def _edit(text: str, start: int, end: int, replacement: str, protected: set[str]) -> str | None:
    """`text` with [start, end) replaced, or None when that would cut into or drop an occurrence of a protected value."""
    for value in protected:
        i = text.find(value)
        while i != -1:
            j = i + len(value)
            touched = (i < end and j > start) if end > start else i < start < j
            if touched and not (start <= i and j <= end and value in replacement):
                return None
            i = text.find(value, i + 1)
    return text[:start] + replacement + text[end:]


@dataclass
class _Draft:
    """The instruction and profile being perturbed, with what every kind needs to stay safe."""

    task: Task
    domain: Domain
    instruction: str
    user: UserProfile
    protected: set[str]
    level: float
    rng: random.Random

    def edit_first(self, candidates: list[tuple[int, int, str]], protected: set[str] | None = None) -> bool:
        """Make the first edit (start, end, replacement) of `candidates`, in random order, that `_edit` allows."""
        self.rng.shuffle(candidates)
        for start, end, replacement in candidates:
            edited = _edit(self.instruction, start, end, replacement, self.protected if protected is None else protected)
            if edited is not None:
                self.instruction = edited
                return True
        return False


def _subs(pattern: str, text: str, replacement: Callable[[re.Match[str]], str]) -> list[tuple[int, int, str]]:
    """Candidate edits: every match of `pattern` in `text` with its replacement."""
    return [(m.start(), m.end(), replacement(m)) for m in re.finditer(pattern, text)]


def _omit(d: _Draft) -> bool:
    """Drop one stated identifying fact from the instruction; the user gives it when asked."""
    keys = [k for k in d.user.known if k != "name"]
    d.rng.shuffle(keys)
    for key in keys:
        value = d.user.known[key]
        fact = rf"{re.escape(words(key))} is {re.escape(fmt(value))}"
        forms = ((rf" and my {fact}(?=[.,])", ""),  # a later fact of several
                 (rf"\b([Mm])y {fact} and my\b", r"\1y"),  # the first fact of several
                 (rf"\s*\bMy {fact}\.", ""))  # the only fact
        moved = (fmt(value), str(value))
        kept = {p for p in d.protected if not any(p in m for m in moved)}  # what the moved value holds goes with it
        for pattern, repl in forms:
            if d.edit_first(_subs(pattern, d.instruction, lambda m, r=repl: m.expand(r)), kept):
                d.instruction = d.instruction.strip()
                d.user = d.user.model_copy(update={
                    "known": {k: v for k, v in d.user.known.items() if k != key},
                    "on_request": {**d.user.on_request, key: value}})
                return True
    return False


def _vague(d: _Draft) -> bool:
    """Shorten a row description to "my <thing>" where the account's list still picks out the same row."""
    candidates: list[tuple[int, int, str]] = []
    for entity in d.domain.entities.values():
        noun, plural = words(entity.name), words(entity.plural_name)
        candidates += _subs(rf"\bthe only one of the {re.escape(plural)} of my account\b", d.instruction,
                            lambda m, n=noun: f"my {n}")
        candidates += _subs(rf"\bthe {re.escape(noun)} with ((?:(?!\bamong\b).)+?) among the {re.escape(plural)} "
                            rf"of my account\b", d.instruction, lambda m, n=noun: f"my {n} with {m.group(1)}")
    return d.edit_first(candidates)


def _self_correction(d: _Draft) -> bool:
    """State a wrong number for one free parameter of a write, then correct it ("4.00, sorry, I mean 7.08")."""
    numbers = [v for call in d.task.gold_chain if d.domain.tools[call.name].writes
               for k, v in call.arguments.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.endswith("_id")]
    d.rng.shuffle(numbers)
    for value in numbers:
        said = fmt(value)
        if isinstance(value, float):
            wrong = fmt(abs(round(value * d.rng.uniform(0.5, 1.5) + d.rng.choice((-1, 1)), 2)))
        else:
            wrong = fmt(max(0, value + d.rng.choice((-2, -1, 1, 2, 3))))
        if wrong == said or wrong in d.protected:
            continue
        pattern = rf"(?<![\w.-]){re.escape(said)}(?![\w-]|\.\d)"
        if d.edit_first(_subs(pattern, d.instruction, lambda m: f"{wrong}, sorry, I mean {said}")):
            return True
    return False


def _paraphrase(d: _Draft) -> bool:
    """Reword stock phrases ("Please" -> "I need you to", "change" -> "update"): the first match surely, others by chance."""
    templates = [t for t in PARAPHRASES if re.search(t[0], d.instruction)]
    d.rng.shuffle(templates)
    applied = False
    for i, (pattern, options) in enumerate(templates):
        if i == 0 or d.rng.random() < 0.5:
            choice = d.rng.choice(options)
            applied |= d.edit_first(_subs(pattern, d.instruction, lambda m: choice))
    return applied


def _distractor(d: _Draft) -> bool:
    """Insert an irrelevant sentence at a sentence boundary (the end always qualifies)."""
    sentence = " " + d.rng.choice(DISTRACTORS)
    ends = [m.start() for m in re.finditer(r"(?<=[.?!]) ", d.instruction)] + [len(d.instruction)]
    return d.edit_first([(i, i, sentence) for i in ends])


def _misspell(word: str, rng: random.Random) -> str:
    """`word` with two inner letters swapped, one dropped or one doubled."""
    i, op = rng.randrange(1, len(word) - 1), rng.choice(("swap", "drop", "double"))
    if op == "swap" and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + word[i] + word[i:] if op == "double" else word[:i] + word[i + 1:]


def _typo(d: _Draft) -> bool:
    """Misspell a few ordinary lowercase words (never inside a protected value); more at higher levels."""
    count = d.rng.randint(1, 1 + round(2 * d.level))
    return sum(d.edit_first(_subs(r"\b[a-z]{4,}\b", d.instruction, lambda m: _misspell(m.group(), d.rng)))
               for _ in range(count)) > 0


_APPLY: dict[str, Callable[[_Draft], bool]] = {
    "omit": _omit, "vague": _vague, "self_correction": _self_correction,
    "paraphrase": _paraphrase, "distractor": _distractor, "typo": _typo,
}


def apply_instruction_noise(task: Task, level: float, seed: int,
                            kinds: set[str] | None = None) -> tuple[Task, list[str]]:
    """A noisy copy of `task` and the kinds applied; each kind is tried with probability `level` (0 changes nothing)."""
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"noise level must be in [0, 1], got {level}")
    unknown = set(kinds or ()) - set(INSTRUCTION_KINDS)
    if unknown:
        raise ValueError(f"unknown instruction noise kinds {sorted(unknown)}; known: {', '.join(INSTRUCTION_KINDS)}")
    rng = random.Random(f"instruction-noise/{task.id}/{seed}")
    draft = _Draft(task, load_domain(task.domain_source), task.instruction, task.user.model_copy(deep=True),
                   protected_values(task), level, rng)
    applied = [kind for kind in INSTRUCTION_KINDS
               if (kinds is None or kind in kinds) and rng.random() < level and _APPLY[kind](draft)]
    return task.model_copy(deep=True, update={"instruction": draft.instruction, "user": draft.user}), applied
