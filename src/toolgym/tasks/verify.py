"""Task verification: the final database state must show exactly the expected changes (any path may get there),
and the final answer must state every required fact."""

from __future__ import annotations

import re

from pydantic import BaseModel

from toolgym.envs.environment import Environment, base_state
from toolgym.envs.state import Snapshot, compare_changes, diff, snapshot
from toolgym.tasks.model import Task

_NUMBER = re.compile(r"(?<![\w.-])-?\d+(?:,\d{3})*(?:\.\d+)?(?![\w.]*\w)")
_OPPOSITE = {"yes": "no", "no": "yes", "true": "false", "false": "true"}


class Verdict(BaseModel):
    """Whether a run passed, with the state problems and missing facts that explain a failure."""

    passed: bool
    state_ok: bool
    answers_ok: bool
    problems: list[str]
    missing_answers: list[str]
    progress: float | None = None
    """The family's own partial-credit measure in [0, 1] (code: share of broken tests fixed); None: rollouts use the
    gold-chain progress of the calls made."""

    @property
    def reward(self) -> float:
        return 1.0 if self.passed else 0.0

    def explain(self) -> str:
        if self.passed:
            return "passed"
        lines = [*self.problems, *(f"answer lacks required fact: {a!r}" for a in self.missing_answers)]
        return "\n".join(lines)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("_", " ")).strip().lower()


def _says(phrase: str, answer: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(_norm(phrase))}(?!\w)", _norm(answer)) is not None


def fact_in_answer(fact: str, answer: str) -> bool:
    """A fact is stated if it appears as whole words (case-insensitive, underscores as spaces); a number must
    appear as a number of the same value ("12.5" states "12.50"; "125" or "a12b" do not). A yes/no (true/false)
    fact must be asserted: an answer that also says its opposite hedges and states nothing."""
    try:
        target = float(fact.replace(",", ""))
    except ValueError:
        opposite = _OPPOSITE.get(_norm(fact))
        return _says(fact, answer) and (opposite is None or not _says(opposite, answer))
    return any(abs(float(n.replace(",", "")) - target) < 0.005 for n in _NUMBER.findall(answer))


def verify(task: Task, env: Environment, answer: str = "", initial: Snapshot | None = None) -> Verdict:
    """Judge `env`'s current state against the task. `initial` defaults to the environment's pristine database;
    then only tables written through `env.call` (and the tables the task expects to change) are compared."""
    tables = env.tables
    if initial is None:
        touched = set(env.touched) | {c.table for c in task.expected_changes}
        tables = [t for t in env.tables if t in touched]
        initial = base_state(env.domain, env.data_seed)[0].only(tables)
    actual = diff(initial, snapshot(env.reader, tables))
    state = compare_changes(task.expected_changes, actual)
    missing = [a for a in task.required_answers if not fact_in_answer(a, answer)]
    return Verdict(passed=state.ok and not missing, state_ok=state.ok, answers_ok=not missing,
                   problems=state.problems, missing_answers=missing)


def gold_answer(task: Task) -> str:
    """An answer that states every required fact (what a perfect agent would say)."""
    return "Done. " + "; ".join(task.required_answers)
