"""Agentic Heavy Thinking and its baselines with scripted policies: candidates never touch the real environment,
the summary sees compressed candidates without their thinking, commits land as exactly one consistent state,
self-consistency follows the majority state, best-of-K follows the verifier, bad summaries fall back, and
`toolgym eval --heavy K` reports the methods side by side."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolgym.agent.toolcall import format_tool_call
from toolgym.agent.trajectory import Trajectory
from toolgym.cli import app
from toolgym.domains import load_domain
from toolgym.envs.sample import EnvironmentSampler
from toolgym.eval.runner import make_episodes
from toolgym.heavy.agentic import (
    AgenticHeavyConfig,
    Candidate,
    majority_choice,
    run_agentic_heavy,
    run_candidates,
    summarize,
)
from toolgym.heavy.baselines import best_of_k, self_consistency
from toolgym.policy.scripted import CoinGoldPolicy, GoldPolicy, ScriptedPolicy
from toolgym.tasks.synthesize import synthesize_task
from toolgym.tasks.verify import gold_answer

HEADER = re.compile(r"^Candidate (\d+) \(", re.MULTILINE)


@pytest.fixture(scope="module")
def write_tasks():
    """Two tasks in each of two domains, every one with at least one write (built here: the session fixture builds
    all domains, which alone takes longer than this file should)."""
    out = []
    for name in ("airline", "hotel"):
        domain = load_domain(name)
        for i, env in enumerate(EnvironmentSampler(domain, seed=7).sample_many(2)):
            task = synthesize_task(env, 100 + i)
            assert any(domain.tools[c.name].writes for c in task.gold_chain)
            out.append(task)
    return out


class Recorder(ScriptedPolicy):
    """A summary policy that answers with a fixed function of the conversation and keeps every prompt it saw."""

    def __init__(self, reply):
        self.seen: list[list[dict]] = []
        super().__init__(self._reply)
        self.reply = reply

    def _reply(self, messages):
        self.seen.append(messages)
        return self.reply(messages)


def _lazy_draws(seed: int, k: int) -> int:
    """How many of CoinGoldPolicy's first k episode plans (p_lazy 0.5) are lazy for this seed."""
    rng = random.Random(seed)
    return sum(rng.random() < 0.5 for _ in range(k))


def _seed_with(lazy: int, k: int = 4) -> int:
    return next(s for s in range(1000) if _lazy_draws(s, k) == lazy)


@pytest.mark.parametrize("noise", ["none", "tool"])
def test_candidates_leave_real_env_untouched_and_choice_commits_its_state(write_tasks, noise):
    tasks = write_tasks[:2]
    episodes = make_episodes(tasks, 1, noise, 1.0, seed=3)
    before = [ep.env.state_hash() for ep in episodes]
    candidates = run_candidates(episodes, CoinGoldPolicy(tasks, 0.5, seed=_seed_with(2)), AgenticHeavyConfig(k=4))
    assert [ep.env.state_hash() for ep in episodes] == before
    assert [len(c) for c in candidates] == [4, 4]
    assert len({c.state_hash for c in candidates[0]}) == 2  # lazy and diligent candidates end in different states

    outcomes = summarize(episodes, candidates, Recorder(lambda _m: "<choice>2</choice>"), AgenticHeavyConfig(k=4))
    for ep, cands, out in zip(episodes, candidates, outcomes):
        second = cands[1]
        assert ep.env.state_hash() == second.state_hash
        assert out.trajectory.passed == second.passed
        assert out.record.decision.kind == "choice" and out.record.decision.chosen == 2
        assert [c.call for c in out.record.committed] == second.actions
        assert {c.candidate for c in out.record.committed} <= {2}
        assert out.trajectory.n_tool_calls == len(second.actions)
        assert out.trajectory.final_answer == gold_answer(ep.task).strip()
        # cost: the heavy trajectory carries every candidate's turns plus the summary turn
        assert out.trajectory.n_turns == sum(c.trajectory.n_turns for c in cands) + 1


def test_composed_summary_commits_its_calls_once(write_tasks):
    tasks = write_tasks[2:]
    by_request = {t.instruction: t for t in tasks}

    def compose(messages):
        task = next(t for req, t in by_request.items() if req in messages[-1]["content"])
        return "\n".join(map(format_tool_call, task.gold_chain)) + "\n" + gold_answer(task)

    episodes = make_episodes(tasks, 1, "tool", 1.0, seed=5)
    lazy = GoldPolicy.from_tasks(tasks, skip_last_write=True)
    outcomes = run_agentic_heavy(episodes, lazy, AgenticHeavyConfig(k=2), summary_policy=Recorder(compose))
    for ep, out in zip(episodes, outcomes):
        assert out.record.decision.kind == "composed"
        assert [c.call for c in out.record.committed] == ep.task.gold_chain
        assert all(c.candidate is None for c in out.record.committed)
        assert all(not c.passed_on_fork for c in out.record.candidates)  # every candidate skipped the last write
        assert out.trajectory.passed, out.trajectory.verdict  # tool noise on the real env: writes retried, once each
        assert out.trajectory.n_tool_calls == len(ep.task.gold_chain) and out.trajectory.progress == 1.0


def test_summary_sees_k_compressed_candidates_without_thinking(write_tasks):
    tasks = write_tasks[:2]
    gold = GoldPolicy.from_tasks(tasks)
    thinker = ScriptedPolicy(lambda m: "<think>secret</think>" + gold.step(m))
    summary = Recorder(lambda _m: "<choice>1</choice>")
    config = AgenticHeavyConfig(k=3, result_chars=40)
    episodes = make_episodes(tasks, 1)
    outcomes = run_agentic_heavy(episodes, thinker, config, summary_policy=summary)

    assert len(summary.seen) == len(tasks)
    for task, seen, out in zip(tasks, summary.seen, outcomes):
        text = json.dumps(seen)
        assert "secret" not in text
        prompt = seen[-1]["content"]
        assert task.instruction in prompt
        assert [int(i) for i in HEADER.findall(prompt)] == [1, 2, 3]
        for block in re.split(HEADER, prompt)[2::2]:
            for call in task.gold_chain:
                assert f"- call {call.name} " in block
            assert f"- final answer: {gold_answer(task).strip()}" in block
            for line in block.splitlines():
                if line.startswith("- call "):
                    result = line.split(" -> ", 1)[1]
                    assert len(re.sub(r"\.\.\.\[\d+ more chars\]$", "", result)) <= 40
        assert out.trajectory.passed and "secret" not in out.trajectory.final_answer


def _candidate(index: int, state: str, answer: str) -> Candidate:
    return Candidate(index=index, state_hash=state,
                     trajectory=Trajectory(task_id="t", domain="d", final_answer=answer))


@pytest.mark.parametrize(("states", "answers", "expected"), [
    ("abb", "xyz", 2),           # strict majority state
    ("abba", "xyyx", 1),         # tied states, tied answers -> lowest index
    ("abbac", "xyyzw", 2),       # tied states -> the more common answer among the tied candidates
    ("abc", "xyz", 1),
])
def test_majority_choice_rule(states, answers, expected):
    candidates = [_candidate(i + 1, s, a) for i, (s, a) in enumerate(zip(states, answers))]
    assert majority_choice(candidates) == expected


@pytest.mark.parametrize(("lazy", "majority_passes"), [(1, True), (3, False)])
def test_self_consistency_follows_majority_and_best_of_k_the_verifier(write_tasks, lazy, majority_passes):
    task = write_tasks[0]
    config = AgenticHeavyConfig(k=4)
    source = make_episodes([task], 1)
    candidates = run_candidates(source, CoinGoldPolicy([task], 0.5, seed=_seed_with(lazy)), config)
    assert sum(not c.passed for c in candidates[0]) == lazy

    sc_eps = make_episodes([task], 1)
    [sc] = self_consistency(sc_eps, candidates)
    assert sc.trajectory.passed is majority_passes
    majority_state = max({c.state_hash for c in candidates[0]},
                         key=lambda h: sum(c.state_hash == h for c in candidates[0]))
    assert sc_eps[0].env.state_hash() == majority_state

    oracle_eps = make_episodes([task], 1)
    [best] = best_of_k(oracle_eps, candidates)
    first_pass = next(c for c in candidates[0] if c.passed)
    assert best.trajectory.passed and best.record.decision.chosen == first_pass.index
    assert oracle_eps[0].env.state_hash() == first_pass.state_hash


class Broken:
    """A summary policy whose generation fails."""

    tokenizer = None
    version = 0

    def generate(self, requests, sampling):
        raise RuntimeError("summary backend down")


@pytest.mark.parametrize("summary", [
    Recorder(lambda _m: 'Here: <tool_call>{"name": "get_booking", "arguments": </tool_call>'),
    Recorder(lambda _m: "<choice>9</choice>"),
    Recorder(lambda _m: "<think>only thoughts</think>"),
    Broken(),
], ids=["malformed-call", "choice-out-of-range", "empty", "generation-error"])
def test_unusable_summary_falls_back_to_self_consistency(write_tasks, summary):
    task = write_tasks[0]
    episodes = make_episodes([task], 1)
    candidates = run_candidates(episodes, CoinGoldPolicy([task], 0.5, seed=_seed_with(1)), AgenticHeavyConfig(k=4))
    [out] = summarize(episodes, candidates, summary, AgenticHeavyConfig(k=4))
    decision = out.record.decision
    assert decision.kind == "fallback" and decision.reason
    assert decision.chosen == majority_choice(candidates[0])
    assert episodes[0].env.state_hash() == candidates[0][decision.chosen - 1].state_hash
    assert out.trajectory.passed  # 3 of 4 candidates were diligent, so the fallback commits a passing state
    assert out.trajectory.messages[-len(out.record.committed) - 1]["heavy"]["decision"]["kind"] == "fallback"
    if isinstance(summary, Broken):
        assert "summary backend down" in out.trajectory.error


def test_eval_cli_heavy_writes_one_report_with_all_methods(tmp_path: Path):
    out = tmp_path / "heavy"
    result = CliRunner().invoke(app, ["eval", "--policy", "scripted:gold", "--suite", "simple", "--heavy", "2",
                                      "--n", "2", "--k", "1", "--max-turns", "12", "--out", str(out)])
    assert result.exit_code == 0, result.output
    runs = {r["name"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert list(runs) == ["single", "self-consistency@2", "heavy@2", "best-of-2 (oracle)"]
    assert all(r["n_episodes"] == 2 for r in runs.values())
    overall = {name: r["metrics"]["overall"] for name, r in runs.items()}
    for name in ("single", "self-consistency@2", "best-of-2 (oracle)"):
        assert overall[name]["pass_at_1"] == 1.0
    # costs are honest: two gold candidates cost twice the single run's turns, the summary adds one turn
    assert overall["self-consistency@2"]["avg_turns"] == 2 * overall["single"]["avg_turns"]
    assert overall["heavy@2"]["avg_turns"] == 2 * overall["single"]["avg_turns"] + 1
    lines = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    heavy = [t for t in lines if t["run"] == "heavy@2"]
    assert len(heavy) == 2 and all(any("heavy" in m for m in t["messages"]) for t in heavy)
