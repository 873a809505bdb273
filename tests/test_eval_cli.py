"""`toolgym eval` end to end: the untrained tiny model on CPU writes the JSON + HTML report (opened in headless
Chromium when it is installed), and the gold policy scores pass^k = 1 through the same command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolgym.cli import app
from toolgym.eval.screenshot import find_chromium, screenshot

runner = CliRunner()


def test_eval_tiny_model_writes_report(tiny_dir, tmp_path: Path):
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", "--policy", str(tiny_dir), "--suite", "simple", "--n", "4", "--k", "2",
                                 "--max-turns", "2", "--max-new-tokens", "16", "--noise", "all", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results["runs"]] == ["clean", "noisy:all"]
    assert all(r["n_episodes"] == 8 for r in results["runs"])
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') >= 3
    if find_chromium() is None:
        pytest.skip("chromium not installed: report written but not rendered")
    png = screenshot(out / "report.html", tmp_path / "report.png")
    import matplotlib.image as mpimg

    pixels = mpimg.imread(png)
    assert png.stat().st_size > 20_000 and pixels.std() > 0.01


def test_eval_gold_policy_scores_perfect_pass_hat_k(tmp_path: Path):
    out = tmp_path / "gold"
    result = runner.invoke(app, ["eval", "--policy", "scripted:gold", "--suite", "random-complex", "--n", "8",
                                 "--k", "2", "--noise", "tool", "--noise-level", "1.0", "--max-turns", "40",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    runs = json.loads((out / "results.json").read_text())["runs"]
    for run in runs:
        overall = run["metrics"]["overall"]
        assert overall["pass_hat_k"] == 1.0 and overall["n_tasks"] == 8
    domains = {d for d in runs[0]["metrics"] if d != "overall"}
    assert len(domains) >= 4


def test_eval_rejects_unknown_policy(tmp_path: Path):
    result = runner.invoke(app, ["eval", "--policy", str(tmp_path / "nope"), "--n", "1", "--k", "1"])
    assert result.exit_code != 0
    assert "neither scripted:gold" in result.output
