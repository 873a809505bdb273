"""`make demo`'s pipeline at toy scale: held-out tasks live in unseen environments, every stage reports, and a bad
configuration fails before any work starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from toolgym.cli import app
from toolgym.demo import main, task_sets
from toolgym.demo_config import PRESETS, DemoConfig
from toolgym.jsonl import read_jsonl
from toolgym.tasks.model import Task

SMALL = dict(model="tiny", envs_per_domain=6, heldout_envs=3, basic_per_env=2, multi_per_env=1, heldout_basic_per_env=2,
             heldout_multi_per_env=1, side_eval_tasks=3, train_eval_tasks=4, sft_steps=2, rl_steps=1, rl_max_wait=5.0, groups_per_step=1,
             group_size=2, eval_k=1, heavy_k=2, max_turns=2, max_new_tokens=16)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_dir) -> tuple[DemoConfig, Path]:
    cfg = DemoConfig(out=tmp_path_factory.mktemp("demo"), base=tiny_dir, **SMALL)
    threads = torch.get_num_threads()
    main(cfg)
    torch.set_num_threads(threads)
    return cfg, cfg.out


def test_heldout_tasks_come_from_environments_never_trained_on(demo_run):
    cfg, out = demo_run
    train = list(read_jsonl(out / "train_tasks.jsonl", Task))
    held = list(read_jsonl(out / "heldout_tasks.jsonl", Task))
    assert train and held
    assert not {t.env.id for t in train} & {t.env.id for t in held}
    assert {t.env.domain for t in train + held} <= set(cfg.train_domains)
    assert {len(t.gold_chain) for t in train + held} == {1, 2}, "both tiers: single calls and lookup + call"


def test_every_evaluation_is_in_the_report(demo_run):
    cfg, out = demo_run
    results = json.loads((out / "report" / "results.json").read_text())
    held = list(read_jsonl(out / "heldout_tasks.jsonl", Task))
    names = [run["name"] for run in results["runs"]]
    conditions = ["held-out basic clean", "held-out basic noisy", "held-out multi clean", "train basic clean",
                  "held-out basic clean, free decoding"]
    assert names[:6] == ["base held-out basic clean", *(f"sft {c}" for c in conditions)]
    assert any(n.startswith(f"heavy@{cfg.heavy_k}") for n in names)
    assert any(n.startswith(f"self-consistency@{cfg.heavy_k}") for n in names)
    basic = [t for t in held if len(t.gold_chain) == 1]
    runs = results["runs"][1:]
    assert results["runs"][0]["n_episodes"] == runs[0]["n_episodes"] == len(basic) * cfg.eval_k
    assert runs[1]["n_episodes"] == runs[4]["n_episodes"] == cfg.side_eval_tasks * cfg.eval_k
    assert runs[2]["n_episodes"] == min(len(held) - len(basic), cfg.multi_eval_tasks) * cfg.eval_k
    extra = results["extra"]
    html = (out / "report" / "report.html").read_text()
    assert extra["heldout_basic_tasks"] == len(basic)
    if extra["rl_steps"]:
        assert [f"rl {c}" for c in conditions[:-1]] == names[6:10]
        assert set(results["rl_minus_sft"]) == set(conditions[:-1])
        assert "After RL" in results["headline"] and results["headline"] in html
    else:
        assert extra["rl_stopped_reason"] and not any(n.startswith("rl ") for n in names)
    assert all(name in html for name in names)
    assert set(results["timings_s"]) >= {"tasks", "base", "sft", "eval sft", "rl", "heavy"}
    assert set(results["sft_minus_base"]) == {"held-out basic clean"} and "After SFT (from the base)" in html


def test_task_sets_depend_only_on_the_seed():
    cfg = DemoConfig(**SMALL)

    def ids(c: DemoConfig) -> list[tuple[str, str]]:
        sets, _ = task_sets(c)
        return [(t.env.id, t.instruction) for group in sets.values() for t in group]

    first = ids(cfg)
    assert ids(cfg) == first
    assert ids(DemoConfig(**{**SMALL, "seed": 1})) != first


@pytest.mark.parametrize("change, field", [
    ({"heldout_envs": 6}, "heldout_envs"),
    ({"train_domains": ("airline", "nope")}, "nope"),
    ({"sft_steps": 0}, "sft_steps"),
    ({"constrain": "json"}, "constrain"),
    ({"group_size": 1}, "group_size"),
])
def test_demo_config_rejects_what_the_pipeline_cannot_run(change, field):
    with pytest.raises(ValueError, match=field):
        DemoConfig(**{**SMALL, **change})


def test_each_model_brings_its_own_defaults_and_explicit_settings_win():
    tiny, smol = DemoConfig(model="tiny"), DemoConfig()
    assert smol.model == "smollm2" and smol.base is None
    assert {k: getattr(tiny, k) for k in PRESETS["tiny"]} == PRESETS["tiny"]
    assert tiny.sft_lr != smol.sft_lr
    assert DemoConfig(model="tiny", sft_lr=0.5).sft_lr == 0.5


@pytest.mark.parametrize("change", [{"from_scratch": True}, {"model": "tiny", "from_scratch": True, "base": "x"}])
def test_pretraining_from_scratch_is_only_for_the_tiny_model_without_a_base(change):
    with pytest.raises(ValueError, match="from_scratch"):
        DemoConfig(**change)


def test_demo_command_reports_a_bad_configuration_without_running(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "run"), "--heldout-envs", "60"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "heldout_envs must be at least 1 and below envs_per_domain" in result.output
    assert not (tmp_path / "run").exists()


def test_python_dash_m_demo_takes_the_demo_options(tmp_path):
    """`make demo` runs `python -m toolgym.demo`; it used to ignore every argument (a --seed 1 run was seed 0)."""
    result = subprocess.run([sys.executable, "-m", "toolgym.demo", "--out", str(tmp_path / "run"), "--heldout-envs",
                             "60"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert result.returncode == 2
    assert "heldout_envs must be at least 1 and below envs_per_domain" in result.stdout + result.stderr
    assert not (tmp_path / "run").exists()


def test_compare_select_trains_both_subsets_at_the_demo_steps_and_pairs_them_with_its_sft(demo_run):
    from toolgym.demo_compare import compare_selection

    cfg, out = demo_run
    compare_selection(out, 0.5)
    results = json.loads((out / "compare-select" / "results.json").read_text())
    basic = [t.id for t in read_jsonl(out / "heldout_tasks.jsonl", Task) if len(t.gold_chain) == 1]
    assert [a["name"] for a in results["arms"]] == ["kcenter 0.5", "random 0.5"]
    examples = sum(1 for _ in (out / "sft_data.jsonl").open())
    for arm, method in zip(results["arms"], ("kcenter", "random")):
        steps = (out / "compare-select" / method / "sft_metrics.jsonl").read_text().splitlines()
        assert len(steps) == cfg.sft_steps
        kept = json.loads((out / "compare-select" / method / "selected.json").read_text())["indices"]
        assert len(kept) == len(set(kept)) == max(1, round(0.5 * examples))
        episodes = (out / "compare-select" / f"{arm['name']}.trajectories.jsonl").read_text().splitlines()
        assert sorted(json.loads(e)["task_id"] for e in episodes) == sorted(basic)
        assert arm["ci_low"] <= arm["difference"] <= arm["ci_high"] and arm["cpu_seconds"] > 0


def test_compare_needs_a_finished_demo_directory(tmp_path):
    result = CliRunner().invoke(app, ["compare", "select", "--demo", str(tmp_path)])
    assert result.exit_code == 1 and "demo_config.json" in result.output
    result = CliRunner().invoke(app, ["compare", "select", "--demo", str(tmp_path), "--fraction", "0"])
    assert result.exit_code != 0 and "--fraction" in result.output


def test_compare_verify_scores_both_models_as_judges_and_keeps_the_agreement_curve(demo_run, tmp_path, monkeypatch):
    """On a copy of the toy demo whose RL stage is its SFT model (the toy's RL has no signal to train on), with RL
    itself stubbed (it is tested in test_self_verify.py and test_judges_learn.py): the comparison evaluates the arm,
    judges the baseline's episodes with both models and keeps the per-step agreement."""
    import shutil

    import toolgym.demo_compare as demo_compare
    from toolgym.rl.runtime_local import RunSummary

    _, out = demo_run
    demo = tmp_path / "demo"
    shutil.copytree(out, demo, ignore=shutil.ignore_patterns("compare-*", "recipe"))
    shutil.copytree(demo / "sft", demo / "rl" / "model", dirs_exist_ok=True)
    lines = (demo / "report" / "trajectories.jsonl").read_text().splitlines()
    relabelled = [json.dumps({**row, "run": "rl held-out basic clean"}) for row in map(json.loads, lines)
                  if row["run"] == "sft held-out basic clean"]
    (demo / "report" / "trajectories.jsonl").write_text("\n".join(lines + relabelled) + "\n")
    (demo / "demo_config.json").write_text(json.dumps({**json.loads((demo / "demo_config.json").read_text()),
                                                      "out": str(demo)}))
    asked = {}

    def fake_rl(cfg, model, tasks, tasks_file, run_out, rollout, steps, self_verify=None, play=None):
        asked.update(model=model, steps=steps, ratio=self_verify.ratio)
        shutil.copytree(model, run_out / "model")
        rows = [{"step": 1, "verify_accuracy": None, "verify_judgments": 0},
                {"step": 2, "verify_accuracy": 0.25, "verify_judgments": 8}]
        (run_out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return RunSummary(steps=2, trained_groups=2, samples_per_s=1.0, trainer_idle_fraction=0.0, queue={})

    monkeypatch.setattr(demo_compare, "train_rl", fake_rl)
    demo_compare.compare_verification(demo, 0.5)
    assert asked == {"model": demo / "sft", "steps": json.loads((demo / "demo_config.json").read_text())["rl_steps"],
                     "ratio": 0.5}
    results = json.loads((demo / "compare-verify" / "results.json").read_text())
    (arm,) = results["arms"]
    assert arm["name"] == "RL + self-verification 0.5" and arm["difference"] == 0.0, "the same model, the same tasks"
    assert results["verification_curve"] == [{"step": 2, "agreement": 0.25, "judgments": 8,
                                               "series": "judgments of the rollouts since the last step"}]
    assert (demo / "compare-verify" / "verification_accuracy.png").stat().st_size > 0
    basic = sum(1 for t in read_jsonl(demo / "heldout_tasks.jsonl", Task) if len(t.gold_chain) == 1)
    scores = results["verification_on_heldout"]
    assert set(scores) == {"demo RL", "RL + self-verification 0.5"}
    for score in scores.values():
        assert score["episodes"] == basic and 0 <= score["balanced_accuracy"] <= 1
    assert "RL + self-verification 0.5" in (demo / "recipe" / "recipe.md").read_text()
