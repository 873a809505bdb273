"""Gold-chain progress: the dense signal for policies that do not pass yet."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from toolgym.agent.rollout import RolloutConfig
from toolgym.envs.environment import ToolCall
from toolgym.tasks.progress import chain_progress

FIND = ToolCall(name="find_flight_by_flight_number", arguments={"flight_number": "AQ1177"})
DEPART = ToolCall(name="depart_flight", arguments={"flight_id": 405})


def test_exact_calls_earn_full_credit_and_the_right_tool_half():
    assert chain_progress([FIND, DEPART], [FIND, DEPART]) == 1.0
    assert chain_progress([FIND, DEPART], [FIND]) == 0.5
    wrong_code = ToolCall(name=FIND.name, arguments={"flight_number": "AQ1122"})
    assert chain_progress([FIND, DEPART], [wrong_code]) == 0.25
    assert chain_progress([FIND, DEPART], [ToolCall(name="get_flight", arguments={"flight_id": 405})]) == 0.0


def test_values_compare_as_the_tools_read_them():
    assert chain_progress([DEPART], [ToolCall(name="depart_flight", arguments={"flight_id": "405"})]) == 1.0
    extra_key = ToolCall(name="depart_flight", arguments={"flight_id": 405, "force": True})
    assert chain_progress([DEPART], [extra_key]) == 0.5


def test_a_repeated_call_is_credited_once():
    twice = [DEPART, ToolCall(name="depart_flight", arguments={"flight_id": 406})]
    assert chain_progress(twice, [DEPART, DEPART]) == 0.75
    assert chain_progress([DEPART], [DEPART] * 5) == 1.0


def test_exact_matches_are_paired_before_name_matches():
    near = ToolCall(name="depart_flight", arguments={"flight_id": 999})
    gold = [near, DEPART]
    assert chain_progress(gold, [DEPART, near]) == 1.0
    assert chain_progress(gold, [DEPART]) == 0.5


def test_empty_gold_chain_is_an_error():
    with pytest.raises(ValueError, match="gold chain"):
        chain_progress([], [FIND])


@pytest.mark.parametrize("weight", [-0.1, 0.5, 1.0])
def test_shaped_reward_stays_below_a_pass(weight):
    with pytest.raises(ValidationError, match="progress_reward"):
        RolloutConfig(progress_reward=weight)
