"""The `toolgym` CLI end to end on small inputs."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from toolgym.cli import app
from toolgym.domains.registry import BUILTIN_DIR
from toolgym.envs.environment import EnvironmentRecord
from toolgym.jsonl import read_jsonl
from toolgym.tasks.model import Task

runner = CliRunner()


def test_domains_list_shows_every_builtin():
    result = runner.invoke(app, ["domains", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("food_delivery", "airline", "bank", "clinic", "hotel", "retail", "telecom", "car_rental"):
        assert name in result.output


def test_compile_reports_broken_spec_and_exits_nonzero(tmp_path: Path):
    raw = yaml.safe_load((BUILTIN_DIR / "food_delivery.yaml").read_text())
    raw["actions"][0]["effects"][0]["values"]["totl"] = 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["domains", "compile", str(bad)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "actions[0].effects[0].values.totl" in result.output


def test_compile_writes_tools_and_database(tmp_path: Path):
    import sqlite3

    out, db = tmp_path / "tools.jsonl", tmp_path / "db.sqlite"
    result = runner.invoke(app, ["domains", "compile", str(BUILTIN_DIR / "hotel.yaml"), "--out", str(out), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) >= 60
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM guest").fetchone()[0] > 0


def test_sample_synth_verify_pipeline(tmp_path: Path):
    envs, tasks = tmp_path / "envs.jsonl", tmp_path / "tasks.jsonl"
    result = runner.invoke(app, ["envs", "sample", "-d", "car_rental", "--n", "6", "--seed", "1", "--out", str(envs)])
    assert result.exit_code == 0, result.output
    records = list(read_jsonl(envs, EnvironmentRecord))
    assert len(records) == 6 and all(len(r.tools) >= 20 for r in records)
    result = runner.invoke(app, ["tasks", "synth", "--envs", str(envs), "--seed", "1", "--out", str(tasks)])
    assert result.exit_code == 0, result.output
    assert len(list(read_jsonl(tasks, Task))) == 6
    result = runner.invoke(app, ["tasks", "verify", str(tasks)])
    assert result.exit_code == 0 and "6/6 gold chains pass" in result.output


def test_synth_needs_exactly_one_source():
    result = runner.invoke(app, ["tasks", "synth"])
    assert result.exit_code != 0


def test_unknown_domain_is_a_clear_error():
    result = runner.invoke(app, ["envs", "sample", "-d", "atlantis", "--n", "1"], env={"COLUMNS": "200"})
    assert result.exit_code != 0
    assert "unknown domain 'atlantis'" in result.output


def test_sft_variants_write_renamed_copies_of_each_task(tasks, tiny_dir, tmp_path, one_thread):
    from toolgym.jsonl import write_jsonl
    from toolgym.sft.data import SFTExample

    some = [t for name in sorted(tasks) for t in tasks[name][:1]][:3]
    write_jsonl(tmp_path / "tasks.jsonl", some)
    result = runner.invoke(app, ["sft", "--model", str(tiny_dir), "--tasks", str(tmp_path / "tasks.jsonl"),
                                 "--out", str(tmp_path / "sft"), "--epochs", "1", "--batch-size", "4",
                                 "--variants", "3"])
    assert result.exit_code == 0, result.output
    examples = list(read_jsonl(tmp_path / "sft" / "sft_data.jsonl", SFTExample))
    assert [ex.task_id for ex in examples] == [t.id for t in some for _ in range(3)]
    assert "3 steps" in result.output
    bad = runner.invoke(app, ["sft", "--model", str(tiny_dir), "--tasks", str(tmp_path / "tasks.jsonl"),
                              "--variants", "0"])
    assert bad.exit_code != 0 and "variants" in bad.output
