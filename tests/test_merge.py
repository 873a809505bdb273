"""Fusing domain experts: the merge arithmetic on hand-made weights, and on the switchboard, two experts trained on
disjoint buttons, fused by weight averaging and by distillation, each keep both skills above chance."""

from __future__ import annotations

import pytest
import torch

from toolgym.models.merge import MergeConfig, merge_checkpoints, merge_state_dicts
from toolgym.rl.switchboard import ROLLOUT, choice_probabilities, press_example, switchboard_tools
from toolgym.sft.distill import examples_from_trajectories, expert_examples
from toolgym.sft.trainer import SFTConfig, train_sft


def test_average_and_task_arithmetic_combine_the_experts_deltas():
    base = {"w": torch.tensor([1.0, 1.0, 1.0])}
    experts = [{"w": torch.tensor([2.0, 1.0, 0.0])}, {"w": torch.tensor([1.0, 3.0, 0.0])}]
    assert torch.equal(merge_state_dicts(base, experts, MergeConfig(method="average"))["w"],
                       torch.tensor([1.5, 2.0, 0.0]))
    assert torch.equal(merge_state_dicts(base, experts, MergeConfig(method="task_arithmetic", scale=0.5))["w"],
                       torch.tensor([1.5, 2.0, 0.0]))
    assert torch.equal(merge_state_dicts(base, experts, MergeConfig(method="task_arithmetic"))["w"],
                       torch.tensor([2.0, 3.0, -1.0]))


def test_ties_drops_small_deltas_and_the_minority_sign_and_averages_the_rest():
    base = {"w": torch.zeros(4)}
    experts = [{"w": torch.tensor([4.0, 0.1, 2.0, -3.0])}, {"w": torch.tensor([-1.0, 0.2, 4.0, -0.1])}]
    merged = merge_state_dicts(base, experts, MergeConfig(method="ties", density=0.75))["w"]
    # expert 1 keeps 4, 2, -3 (0.1 trimmed); expert 2 keeps -1, 4, 0.2 (-0.1 trimmed). Entry 0: +4 outvotes -1, so
    # only +4 counts; entry 1: only 0.2 survived; entry 2: both agree, averaged (not summed); entry 3: only -3.
    assert torch.allclose(merged, torch.tensor([4.0, 0.2, 3.0, -3.0]))


def test_buffers_are_the_bases_and_experts_of_another_shape_are_refused():
    base = {"w": torch.zeros(2), "index": torch.tensor([0, 1])}
    expert = {"w": torch.ones(2), "index": torch.tensor([5, 5])}
    assert torch.equal(merge_state_dicts(base, [expert], MergeConfig(method="average"))["index"], base["index"])
    with pytest.raises(ValueError, match="same base"):
        merge_state_dicts(base, [{"w": torch.ones(3), "index": base["index"]}], MergeConfig())
    with pytest.raises(ValueError, match="at least one expert"):
        merge_state_dicts(base, [], MergeConfig())


@pytest.fixture(scope="module")
def experts(switchboard, tmp_path_factory, one_thread):
    """Two experts fine-tuned from the warm switchboard: A presses red and green right, B blue and gold."""
    tasks, warm = switchboard
    tools, root = switchboard_tools(), tmp_path_factory.mktemp("experts")
    halves = {"A": tasks[:2], "B": tasks[2:]}
    for name, half in halves.items():
        data = [press_example(t, tools, t.gold_chain[0].name) for t in half * 32]
        train_sft(warm, data, root / name, SFTConfig(epochs=4, lr=3e-3, batch_size=16, warmup_steps=5),
                  show_progress=False)
    return tasks, warm, {root / name: half for name, half in halves.items()}


def test_each_expert_knows_only_its_own_buttons(experts):
    tasks, warm, by_expert = experts
    assert sum(choice_probabilities(warm, tasks)) / 4 < 0.25, "the warm model should start below chance"
    for path, half in by_expert.items():
        own = choice_probabilities(path, half)
        other = choice_probabilities(path, [t for t in tasks if t not in half])
        assert min(own) > 0.8 and max(other) < 0.25, (own, other)


def test_averaged_experts_keep_both_skills_above_chance(experts, tmp_path):
    tasks, warm, by_expert = experts
    fused = merge_checkpoints(warm, list(by_expert), tmp_path / "avg", MergeConfig(method="average"))
    assert (fused / "merge.json").exists()
    assert min(choice_probabilities(fused, tasks)) > 0.3


def test_a_student_distilled_from_both_experts_rollouts_learns_both(experts, tmp_path):
    tasks, warm, by_expert = experts
    torch.manual_seed(0)
    data = expert_examples(by_expert, trials=16, rollout=ROLLOUT)
    assert {e.task_id for e in data} == {t.id for t in tasks}
    train_sft(warm, data, tmp_path / "student", SFTConfig(epochs=4, lr=3e-3, batch_size=16, warmup_steps=5),
              show_progress=False)
    assert min(choice_probabilities(tmp_path / "student", tasks)) > 0.5


def test_only_passed_trajectories_become_examples(switchboard):
    from toolgym.agent.trajectory import Trajectory

    tasks, _ = switchboard
    messages = press_example(tasks[0], [], "red").messages
    kept = examples_from_trajectories([Trajectory(task_id=tasks[0].id, domain="switchboard", messages=messages,
                                                  passed=passed) for passed in (True, False)], tasks)
    assert len(kept) == 1 and kept[0].train == [True, True] and kept[0].tools
    with pytest.raises(ValueError, match="no task"):
        examples_from_trajectories([Trajectory(task_id="elsewhere", domain="x", passed=True)], tasks)


def test_merge_cli_writes_a_checkpoint_and_refuses_experts_of_another_base(tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from toolgym.cli import app
    from toolgym.policy.hf import load_causal_lm
    from toolgym.policy.tiny import build_tiny_model

    result = CliRunner().invoke(app, ["merge", "--base", str(tiny_dir), "--expert", str(tiny_dir), "--expert",
                                      str(tiny_dir), "--method", "task_arithmetic", "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    merged, base = load_causal_lm(tmp_path / "m").state_dict(), load_causal_lm(tiny_dir).state_dict()
    assert all(torch.equal(merged[k], base[k]) for k in base), "experts equal to the base add a zero delta"
    other = build_tiny_model(["a tiny corpus"] * 4, tmp_path / "other", vocab_size=300, hidden_size=32,
                             num_layers=1, num_heads=2, max_position_embeddings=64)
    result = CliRunner().invoke(app, ["merge", "--base", str(tiny_dir), "--expert", str(other), "--out",
                                      str(tmp_path / "bad")])
    assert result.exit_code == 1 and "same base" in result.output
    result = CliRunner().invoke(app, ["merge", "--base", str(tiny_dir), "--expert", str(tiny_dir), "--method",
                                      "median", "--out", str(tmp_path / "bad")])
    assert result.exit_code != 0 and "method" in result.output
