"""Self-verification as an auxiliary RL task (rl.self_verify): what the judge is shown, how its verdict is read and
rewarded, which groups are judged, how judgments flow through the runtime beside the task groups, and (on the
switchboard, test_judges_learn.py) that RL on them makes a judge that starts below chance right."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from toolgym.agent.rollout import BatchedPolicy, RolloutConfig
from toolgym.agent.toolcall import format_tool_call
from toolgym.agent.trajectory import Trajectory
from toolgym.envs.environment import ToolCall
from toolgym.policy.base import Completion
from toolgym.policy.scripted import CoinGoldPolicy, ScriptedPolicy
from toolgym.rl.config import RLConfig
from toolgym.rl.manager import ManagerConfig
from toolgym.rl.runtime_local import TrainingRun
from toolgym.rl.self_verify import (
    VERDICT_TOOL,
    SelfVerification,
    SelfVerifyingPlayer,
    episode_steps,
    judgment,
    parse_verdict,
    verification_messages,
    verification_scores,
)
from toolgym.rl.simulated import SimulatedTrainer


def _episode(passed: bool) -> Trajectory:
    messages = [{"role": "system", "content": "You serve Acme."}, {"role": "user", "content": "Cancel order 7."},
                {"role": "assistant", "content": format_tool_call(ToolCall(name="find_order", arguments={"id": 7}))},
                {"role": "tool", "name": "find_order", "content": '{"id": 7, "status": "open"}'},
                {"role": "assistant", "content": "Which reason?"},
                {"role": "user", "content": "Too late."},
                {"role": "assistant", "content": "",
                 "tool_calls": [{"id": "c1", "type": "function", "function": {
                     "name": "cancel_order", "arguments": json.dumps({"id": 7, "reason": "late"})}}]},
                {"role": "tool", "name": "cancel_order", "tool_call_id": "c1", "content": '{"ok": true}'},
                {"role": "assistant", "content": "<think>done</think>Order 7 is cancelled."}]
    return Trajectory(task_id="t", domain="shop", messages=messages, final_answer="<think>done</think>Order 7 is "
                      "cancelled.", passed=passed, reward=float(passed))


def test_the_judge_sees_each_call_with_its_result_the_user_replies_and_the_answer_without_thinking():
    steps = episode_steps(_episode(True))
    assert [(s.kind, s.call.name if s.call else s.text) for s in steps] == [
        ("call", "find_order"), ("user", "Too late."), ("call", "cancel_order")]
    assert steps[2].call.arguments == {"id": 7, "reason": "late"} and steps[2].text == '{"ok": true}'
    system, prompt = verification_messages(_episode(True), result_chars=10)
    assert system == {"role": "system", "content": "You serve Acme."}
    text = prompt["content"]
    assert "Cancel order 7." in text and "- user: Too late." in text
    assert '- call find_order {"id":7} -> {"id": 7, ...[17 more chars]' in text
    assert "- final answer: Order 7 is cancelled." in text and "<think>" not in text


def _verdict(arguments: dict, native: bool = False) -> Completion:
    call = ToolCall(name=VERDICT_TOOL, arguments=arguments)
    if native:
        return Completion(text="", tool_calls=[{"id": "v", "type": "function", "function": {
            "name": VERDICT_TOOL, "arguments": json.dumps(arguments)}}])
    return Completion(text=format_tool_call(call))


@pytest.mark.parametrize("completion, expected", [
    (_verdict({"satisfied": True, "reason": "ok"}), True),
    (_verdict({"satisfied": False, "reason": "no"}, native=True), False),
    (_verdict({"satisfied": "yes", "reason": "a string is not a verdict"}), None),
    (_verdict({"reason": "no verdict at all"}), None),
    (Completion(text="It looks fine to me."), None),
    (Completion(text=format_tool_call(ToolCall(name="cancel_order", arguments={"satisfied": True}))), None),
])
def test_only_a_boolean_submit_verdict_call_is_a_verdict(completion, expected):
    assert parse_verdict(completion) is expected


@pytest.mark.parametrize("passed", [True, False])
@pytest.mark.parametrize("said", [True, False, None])
def test_a_judgment_is_rewarded_for_agreeing_with_the_verifier(passed, said):
    completion = Completion(text="nothing") if said is None else _verdict({"satisfied": said, "reason": "r"})
    judged = judgment(_episode(passed), verification_messages(_episode(passed)), completion, None)
    assert judged.reward == float(said is not None and said == passed) and judged.passed == (judged.reward == 1.0)


def test_which_groups_are_judged_is_a_seeded_share():
    player = SelfVerifyingPlayer(SelfVerification(ratio=0.3), seed=5)
    picks = [player.judges(gid) for gid in range(2000)]
    assert picks == [SelfVerifyingPlayer(SelfVerification(ratio=0.3), seed=5).judges(g) for g in range(2000)]
    assert picks != [SelfVerifyingPlayer(SelfVerification(ratio=0.3), seed=6).judges(g) for g in range(2000)]
    assert 0.26 < sum(picks) / len(picks) < 0.34
    assert not any(SelfVerifyingPlayer(SelfVerification(ratio=0.0)).judges(g) for g in range(200))
    assert all(SelfVerifyingPlayer(SelfVerification(ratio=1.0)).judges(g) for g in range(200))


@pytest.mark.parametrize("where", [{"runtime": "ray"}, {"controllers": 2}])
def test_self_verification_is_refused_where_the_manager_does_not_play_groups(where):
    with pytest.raises(ValueError, match="self_verify runs with runtime local"):
        RLConfig(model="m", tasks="t", self_verify=SelfVerification(ratio=0.5), **where)
    assert RLConfig(model="m", tasks="t", **where).self_verify.ratio == 0.0


class CoinJudge(ScriptedPolicy):
    """Plays tasks like CoinGoldPolicy (half the episodes skip their last write) and judges at random."""

    def __init__(self, tasks):
        self.agent = CoinGoldPolicy(tasks)
        self.rng = random.Random(0)
        super().__init__(self._next)

    def _next(self, messages):
        if "Call submit_verdict" in messages[-1]["content"]:
            verdict = self.rng.random() < 0.5
            return format_tool_call(ToolCall(name=VERDICT_TOOL, arguments={"satisfied": verdict, "reason": "coin"}))
        return self.agent.step(messages)


@pytest.fixture(scope="module")
def rl_tasks(tasks):
    return [t for name in sorted(tasks) for t in tasks[name][:2] if t.expected_changes]


def test_a_judged_group_adds_group_size_judgments_of_one_of_its_episodes(rl_tasks):
    player = SelfVerifyingPlayer(SelfVerification(ratio=0.5), seed=3)
    client = BatchedPolicy(CoinJudge(rl_tasks), RolloutConfig().sampling)
    cfg = ManagerConfig(group_size=5)
    judged = [gid for gid in range(40) if player.judges(gid)]
    assert 0 < len(judged) < 40
    assert len({player.judged_episode(gid, 5) for gid in judged}) > 1
    for gid in (judged[0], next(g for g in range(40) if g not in judged)):
        groups = asyncio.run(player(client, gid, rl_tasks[0], cfg, RolloutConfig(max_turns=12), None, 0))
        assert groups[0].kind == "task" and len(groups[0].trajectories) == 5
        if gid not in judged:
            assert len(groups) == 1
            continue
        (verify,) = groups[1:]
        episode = groups[0].trajectories[player.judged_episode(gid, 5)]
        assert verify.kind == "verify" and verify.group_id == f"g{gid}-verify" and len(verify.trajectories) == 5
        for judgment in verify.trajectories:
            assert judgment.messages[:2] == verification_messages(episode)
            said = parse_verdict(Completion(text=judgment.messages[2]["content"]))
            assert judgment.reward == float(said == episode.passed)


def test_judgments_train_beside_the_task_groups_and_their_accuracy_is_logged(tmp_path, rl_tasks):
    cfg = RLConfig(model="unused", tasks="unused", out=str(tmp_path), steps=6, groups_per_step=4, max_staleness=1,
                   checkpoint_every=0, curriculum=False, manager=ManagerConfig(group_size=4, inflight_groups=4),
                   rollout=RolloutConfig(max_turns=12), self_verify=SelfVerification(ratio=1.0))
    trainer = SimulatedTrainer()
    run = TrainingRun(cfg, rl_tasks, CoinJudge(rl_tasks), trainer, show_progress=False,
                      play=SelfVerifyingPlayer(cfg.self_verify, cfg.seed))
    assert run.run().steps == 6
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    trained = [gid for gid, _, _ in trainer.seen]
    assert any(g.endswith("-verify") for g in trained) and any(not g.endswith("-verify") for g in trained)
    for row in rows:
        step_groups = [gid for gid, version, _ in trainer.seen if version == row["step"] - 1]
        assert row["verify_trained"] == 4 * sum(g.endswith("-verify") for g in step_groups)
    judged = [r for r in rows if r["verify_judgments"]]
    assert judged and all(0.0 <= r["verify_accuracy"] <= 1.0 for r in judged)
    assert sum(r["verify_judgments"] for r in rows) <= sum(r["rollouts"] for r in rows)


def test_balanced_accuracy_does_not_reward_always_saying_failed():
    truths = [True] + [False] * 9
    always_no = verification_scores([False] * 10, truths)
    assert always_no.accuracy == 0.9 and always_no.balanced_accuracy == 0.5
    missing = verification_scores([None, True] + [False] * 8, truths)
    assert missing.no_verdict == 0.1 and missing.accuracy == 0.8 and missing.balanced_accuracy == pytest.approx(0.4444, abs=1e-3)
    with pytest.raises(ValueError, match="one verdict per episode"):
        verification_scores([True], truths)
