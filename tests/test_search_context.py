"""Context management under real pressure: a scripted reader that opens every candidate page cannot finish a search
task without context management (it overflows its window) and finishes every one with summaries."""

from __future__ import annotations

import pytest

from toolgym.domains import load_domain
from toolgym.envs.sample import EnvironmentSampler
from toolgym.search.policies import OVERFLOW, ReadEverythingPolicy, answer_from_find
from toolgym.search.sweep import context_sweep, strategies
from toolgym.search.synthesize import synthesize_search_tasks

WINDOW = 8000


@pytest.fixture(scope="module")
def tasks():
    env = next(EnvironmentSampler(load_domain("food_delivery"), seed=3).sample_many(1))
    return synthesize_search_tasks(env, 4, seed=2)[0]


@pytest.fixture(scope="module")
def sweep(tasks):
    return context_sweep(tasks, lambda: ReadEverythingPolicy(tasks, WINDOW), thresholds=[3000], reset_limits=[150],
                         max_turns=200)


def test_the_sweep_covers_every_strategy():
    assert strategies([1000, 2000], [20]) == [("none", None, None), ("summary", 1000, None), ("summary", 2000, None),
                                             ("discard", None, 20), ("hybrid", 1000, 20), ("hybrid", 2000, 20)]


def test_impossible_without_context_management_solvable_with_it(sweep):
    results, runs = sweep
    by_name = {r.strategy: r for r in results}
    assert by_name["none"].pass_at_1 == 0.0
    assert all(t.final_answer == OVERFLOW for t in runs[0].trajectories)
    assert by_name["summary"].pass_at_1 == 1.0 and by_name["summary"].summaries_per_episode > 1
    assert by_name["hybrid"].pass_at_1 == 1.0
    assert by_name["discard"].pass_at_1 == 0.0  # a reset limit past the window's reach never fires in time
    assert all(r.episodes == 4 and r.tokens_per_episode > WINDOW for r in results)


def test_a_reset_before_the_end_of_the_plan_sends_the_reader_back_to_the_start(tasks):
    results, runs = context_sweep(tasks[:1], lambda: ReadEverythingPolicy(tasks[:1], WINDOW), thresholds=[3000],
                                  reset_limits=[20], max_turns=70)
    hybrid = results[-1]
    assert hybrid.strategy == "hybrid" and hybrid.resets_per_episode >= 2 and hybrid.pass_at_1 == 0.0
    assert runs[-1].trajectories[0].termination == "max_turns"


def test_the_reader_answers_only_from_a_line_it_found():
    found = '{"page": "p1", "title": "T", "matches": [{"part": 1, "line": "The total of this order is 12.50."}]}'
    assert answer_from_find(found, "total") == "The total is 12.50."
    assert answer_from_find('{"matches": []}', "total") == "" and answer_from_find("[summarized]", "total") == ""
