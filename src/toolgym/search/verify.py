"""Verdicts on search episodes: the answer must state the question's answer (numbers, case and whitespace normalized
as for every task; an ISO date may also be written with its month's name), and the page holding the answer must
have been read in the episode, so a guess (a common status, a value seen in a snippet) earns nothing."""

from __future__ import annotations

import re
from datetime import date, datetime

from toolgym.search.tools import SearchEnvironment
from toolgym.tasks.model import Task
from toolgym.tasks.verify import Verdict, fact_in_answer

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NAMED_DATES = [(re.compile(r"\b[A-Z][a-z]+ \d{1,2}, \d{4}\b"), "%B %d, %Y"),
                (re.compile(r"\b\d{1,2} [A-Z][a-z]+ \d{4}\b"), "%d %B %Y")]


def _named_dates(answer: str) -> set[date]:
    found = set()
    for pattern, form in _NAMED_DATES:
        for text in pattern.findall(answer):
            try:
                found.add(datetime.strptime(text, form).date())
            except ValueError:
                continue
    return found


def states_fact(fact: str, answer: str) -> bool:
    """Whether `answer` states `fact`: as toolgym.tasks.verify.fact_in_answer, or as a date written with a month name
    ("March 4, 2021" or "4 March 2021" for 2021-03-04)."""
    if fact_in_answer(fact, answer):
        return True
    return bool(_ISO_DATE.match(fact)) and date.fromisoformat(fact) in _named_dates(answer)


def verify_search(task: Task, env: SearchEnvironment, answer: str) -> Verdict:
    """Pass when every required fact is stated and the answer's page was read (opened or searched within)."""
    missing = [fact for fact in task.required_answers if not states_fact(fact, answer)]
    problems = []
    if env.answer_page is not None and env.answer_page not in env.read_pages:
        problems.append(f"the page holding the answer ({env.answer_page}) was never opened")
    return Verdict(passed=not missing and not problems, state_ok=not problems, answers_ok=not missing,
                   problems=problems, missing_answers=missing)
