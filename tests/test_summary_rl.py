"""RL for Heavy Thinking's summary stage (heavy.summary_rl): the choose_candidate form, training cases of compressed
candidates, and the group player that samples summaries of one case, commits each onto its own fresh environment and
rewards it by the verifier, training only the summary's own tokens. That RL on these groups makes a summary that
starts below chance choose the passing candidate is checked on the switchboard (test_judges_learn.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from toolgym.agent.rollout import BatchedPolicy, RolloutConfig
from toolgym.agent.toolcall import format_tool_call
from toolgym.envs.environment import ToolCall
from toolgym.heavy.agentic import CHOICE_TOOL, AgenticHeavyConfig, parse_summary
from toolgym.heavy.summary_rl import SummaryGame, collect_cases
from toolgym.policy.base import SamplingParams
from toolgym.policy.hf import HFPolicy
from toolgym.policy.scripted import CoinGoldPolicy, ScriptedPolicy
from toolgym.rl.manager import ManagerConfig
from toolgym.rl.switchboard import CHOICE_CONFIG, ROLLOUT, choice_cases


def _choose(n) -> str:
    return format_tool_call(ToolCall(name=CHOICE_TOOL, arguments={"candidate": n}))


@pytest.mark.parametrize("text, kind, chosen", [
    (_choose(2), "choice", 2),
    (_choose(4), "fallback", None),
    (_choose(0), "fallback", None),
    (_choose("2"), "choice", 2),
    (_choose("two"), "fallback", None),
    (_choose(True), "fallback", None),
    ("<choice>3</choice>", "choice", 3),
    ("I pick the second one.", "composed", None),
])
def test_a_choose_candidate_call_is_a_choice_of_an_existing_candidate(text, kind, chosen):
    decision = parse_summary(text, 3)
    assert (decision.kind, decision.chosen) == (kind, chosen)


def test_native_choose_candidate_calls_are_read_too():
    native = [{"id": "c", "type": "function", "function": {"name": CHOICE_TOOL, "arguments": json.dumps({"candidate": 1})}}]
    assert parse_summary("", 2, native).chosen == 1


@pytest.fixture(scope="module")
def write_tasks(tasks):
    return [t for name in ("airline", "hotel") for t in tasks[name][:3] if t.expected_changes][:4]


def test_cases_keep_what_the_prompt_shows_and_drop_the_candidates_tokens(write_tasks):
    config = AgenticHeavyConfig(k=4, seed=3)
    cases = collect_cases(write_tasks, CoinGoldPolicy(write_tasks, seed=1), config, RolloutConfig(max_turns=12))
    assert [c.task.id for c in cases] == [t.id for t in write_tasks]
    for case in cases:
        assert len(case.candidates) == 4
        for cand in case.candidates:
            assert cand.trajectory.segments == [] and cand.trajectory.turns == [] and cand.actions
        assert case.any_passed == any(c.trajectory.passed for c in case.candidates)
    assert any(c.any_passed for c in cases) and any(not c.passed for case in cases for c in case.candidates)


class Picker(ScriptedPolicy):
    """A summary that always chooses candidate `n`, at weights version 7."""

    def __init__(self, n: int):
        super().__init__(lambda messages: _choose(n), version=7)


@pytest.mark.parametrize("n", [1, 2])
def test_a_group_commits_each_summary_on_a_fresh_environment_and_rewards_it_by_the_verifier(switchboard, n):
    tasks, _ = switchboard
    cases = choice_cases(tasks)
    game = SummaryGame(cases, CHOICE_CONFIG)
    client = BatchedPolicy(Picker(n), ROLLOUT.sampling)
    cfg = ManagerConfig(group_size=3)
    for case in cases:
        (group,) = asyncio.run(game(client, 11, case.task, cfg, ROLLOUT, None, step=2))
        assert group.group_id == "g11" and group.task_id == case.task.id and len(group.trajectories) == 3
        right = case.candidates[n - 1].passed
        assert group.rewards == [float(right)] * 3
        for traj in group.trajectories:
            assert traj.n_turns == 1 and traj.min_version == 7, "candidates' turns must not enter the group"
            assert [c["call"]["name"] for c in traj.messages[2]["heavy"]["committed"]] == [
                a.name for a in case.candidates[n - 1].actions]


def test_only_the_summarys_own_tokens_are_trainable(switchboard):
    tasks, warm = switchboard
    case = choice_cases(tasks)[0]
    policy = HFPolicy(warm, constrain="schema")
    client = BatchedPolicy(policy, SamplingParams(temperature=1.0, max_new_tokens=24, seed=0))
    (group,) = asyncio.run(SummaryGame([case], CHOICE_CONFIG)(client, 0, case.task, ManagerConfig(group_size=2),
                                                             ROLLOUT, None, step=0))
    for traj in group.trajectories:
        (segment,) = traj.segments
        sampled = segment.sampled_ids
        assert len(sampled) == traj.turns[0].n_tokens > 0
        assert segment.token_ids[-len(sampled):] == sampled, "the summary's tokens are the segment's last ones"
        prompt = policy.tokenizer.decode(segment.token_ids[:-len(sampled)])
        assert "Candidate 2 (0 tool calls" in prompt and CHOICE_TOOL in prompt


def test_heavy_evaluation_adds_each_extra_summary_over_the_same_candidates(write_tasks):
    from toolgym.eval.heavy import evaluate_heavy

    runs = evaluate_heavy(CoinGoldPolicy(write_tasks, seed=2), write_tasks, K=3, config=AgenticHeavyConfig(seed=4),
                          rollout=RolloutConfig(max_turns=12), summary_policy=Picker(1),
                          summarizers={"second": Picker(2), "third": Picker(3)})
    by_name = {r.name: r for r in runs}
    assert list(by_name) == ["single", "self-consistency@3", "heavy@3", "heavy@3 (second)", "heavy@3 (third)",
                             "best-of-3 (oracle)"]
    for n, name in ((1, "heavy@3"), (2, "heavy@3 (second)"), (3, "heavy@3 (third)")):
        for traj in by_name[name].trajectories:
            record = traj.messages[2]["heavy"]
            assert record["decision"]["chosen"] == n
            assert traj.passed == record["candidates"][n - 1]["passed_on_fork"]
    candidates = [[c["state_hash"] for c in t.messages[2]["heavy"]["candidates"]] for t in by_name["heavy@3"].trajectories]
    assert candidates == [[c["state_hash"] for c in t.messages[2]["heavy"]["candidates"]]
                          for t in by_name["heavy@3 (third)"].trajectories]
