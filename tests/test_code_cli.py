"""`toolgym tasks synth --domain code` from the command line."""

from __future__ import annotations

from typer.testing import CliRunner

from toolgym.cli import app
from toolgym.jsonl import read_jsonl
from toolgym.tasks.model import Task

runner = CliRunner()


def test_tasks_synth_code_writes_validated_tasks_and_acceptance(tmp_path):
    out = tmp_path / "code.jsonl"
    result = runner.invoke(app, ["tasks", "synth", "--domain", "code", "--n", "2", "--seed", "4", "--out", str(out),
                                 "--show", "1"])
    assert result.exit_code == 0, result.output
    tasks = list(read_jsonl(out, Task))
    assert len(tasks) == 2 and all(t.env.family == "code" for t in tasks)
    assert "acceptance" in result.output and "2 tasks from 2 modules" in result.output
    assert tasks[0].id in result.output

