"""The first hour of issue 17: user errors are messages (not tracebacks, not mangled by markup), listings can be
read by programs (--json, plain when piped), and a training run that stops early says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from toolgym.cli import app
from toolgym.domains import builtin_names
from toolgym.rl.runtime_local import RunSummary
from toolgym.rl.switchboard import SPEC as SWITCHBOARD_SPEC

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, list(args), env={"COLUMNS": "40"})
    assert "Traceback" not in result.output and not isinstance(result.exception, (KeyError, FileNotFoundError,
                                                                                   yaml.YAMLError))
    return result


def test_domains_list_piped_is_plain_and_untruncated_and_json_on_request():
    plain = _run("domains", "list")
    assert plain.exit_code == 0
    lines = [line.split("\t") for line in plain.output.splitlines()]
    assert lines[0][:2] == ["domain", "title"] and sorted(row[0] for row in lines[1:]) == builtin_names()
    listed = json.loads(_run("domains", "list", "--json").output)
    assert sorted(d["domain"] for d in listed) == builtin_names() and all(d["tools"] >= 60 for d in listed)


def test_domains_show_tools_as_json():
    tools = json.loads(_run("domains", "show", "bank", "--tools", "--json").output)
    assert {"get_customer", "create_customer"} <= {t["tool"] for t in tools}


def test_a_yaml_syntax_error_in_a_spec_shows_line_caret_and_brackets(tmp_path: Path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\ntitle: Mine\nentities: [customer, {name: x\n  - broken: [1, 2\n")
    result = _run("domains", "compile", str(bad))
    assert result.exit_code == 1
    assert "line 4" in result.output and "^" in result.output and "- broken: [1, 2" in result.output
    assert str(bad) in result.output


def test_a_missing_envs_file_is_a_message():
    result = _run("tasks", "synth", "--envs", "no/such/envs.jsonl")
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.fixture
def rl_config(tmp_path: Path):
    def write(text: str) -> Path:
        path = tmp_path / "rl.yaml"
        path.write_text(text)
        return path
    (tmp_path / "tasks.jsonl").write_text("")
    return write, tmp_path


def test_train_config_errors_are_messages_given_before_any_model_loads(rl_config):
    write, root = rl_config
    result = _run("train", str(write("model: m\ntasks: [oops\n")))
    assert result.exit_code == 1 and "not valid YAML" in result.output and "line 3" in result.output
    result = _run("train", str(write(f"model: {root}\ntasks: {root}/missing.jsonl\n")))
    assert result.exit_code == 1 and "missing.jsonl' does not exist" in result.output
    result = _run("train", str(write(f"model: {root}\ntasks: {root}/tasks.jsonl\ntrainer: {{algorithm: ppo}}\n")))
    assert result.exit_code == 1 and "'ppo' is unknown" in result.output and "gspo" in result.output
    result = _run("train", str(write(f"model: {root}\ntasks: {root}/tasks.jsonl\nout: {root}/run\n")), "--resume")
    assert result.exit_code == 1 and "no checkpoint" in result.output


def test_train_on_a_vllm_server_without_vllm_says_how_to_get_it(rl_config, tiny_dir):
    write, root = rl_config
    result = _run("train", str(write(f"model: {tiny_dir}\ntasks: {root}/tasks.jsonl\nout: {root}/run\n"
                                     f"engine: vllm-server\nvllm_server: {{python: {root}/no-vllm/python}}\n")))
    assert result.exit_code == 1 and "no vLLM Python" in result.output and "make vllm-env" in result.output
    assert "Traceback" not in result.output


def test_train_that_stops_early_says_why_and_what_helps(rl_config, monkeypatch):
    import toolgym.rl.runtime_local as runtime

    write, root = rl_config
    summary = RunSummary(steps=0, trained_groups=0, samples_per_s=0.0, trainer_idle_fraction=1.0, queue={},
                         stopped_reason="no trainable group within 60s: every group's rewards were equal")
    monkeypatch.setattr(runtime, "train_from_config", lambda cfg, resume: summary)
    result = _run("train", str(write(f"model: {root}\ntasks: {root}/tasks.jsonl\nsteps: 20\n")))
    assert result.exit_code == 1
    assert "stopped early after 0 of 20 steps" in result.output and "progress_reward" in result.output


def test_records_of_a_changed_or_missing_custom_spec_are_refused_with_a_message(tmp_path: Path):
    from toolgym.domains import load_domain
    from toolgym.envs.environment import Environment
    from toolgym.jsonl import write_jsonl

    spec = tmp_path / "switchboard.yaml"
    spec.write_text(SWITCHBOARD_SPEC.read_text())
    env = Environment(load_domain(str(spec)), ["red", "blue", "get_press"], env_id="custom")
    write_jsonl(tmp_path / "envs.jsonl", [env.record()])
    env.close()
    spec.write_text(spec.read_text().replace("rows: 1", "rows: 2"))
    load_domain.cache_clear()
    result = _run("tasks", "synth", "--envs", str(tmp_path / "envs.jsonl"), "--out", str(tmp_path / "t.jsonl"))
    assert result.exit_code == 1 and "was the domain spec changed?" in result.output
    spec.unlink()
    load_domain.cache_clear()
    result = _run("tasks", "synth", "--envs", str(tmp_path / "envs.jsonl"), "--out", str(tmp_path / "t.jsonl"))
    assert result.exit_code == 1 and "not found" in result.output


def test_sampling_a_domain_smaller_than_min_tools_is_a_message(tmp_path: Path):
    spec = str(SWITCHBOARD_SPEC)
    result = _run("envs", "sample", "-d", spec, "--n", "1", "--out", str(tmp_path / "e.jsonl"))
    assert result.exit_code == 1 and "--min-tools 6 or fewer" in result.output
    result = _run("envs", "sample", "-d", spec, "--n", "1", "--min-tools", "4", "--out", str(tmp_path / "e.jsonl"))
    assert result.exit_code == 0 and (tmp_path / "e.jsonl").exists()
