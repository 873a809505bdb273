"""Class 7 of issue 17: a real `toolgym train` process killed with SIGKILL mid-run and resumed with --resume trains
every group exactly once and leaves a valid metrics file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from toolgym.jsonl import write_jsonl
from toolgym.rl.switchboard import warm_switchboard

STEPS, GROUPS_PER_STEP = 4, 2


@pytest.fixture(scope="module")
def switchboard_run(tmp_path_factory, one_thread):
    """A training config on the switchboard domain with a warmed-up tiny model that presses right and wrong buttons
    (so groups carry reward variance and train)."""
    root = tmp_path_factory.mktemp("crash")
    tasks, _ = warm_switchboard(root, repeats=16, epochs=6)
    write_jsonl(root / "tasks.jsonl", tasks)
    config = {"model": str(root / "warm"), "tasks": str(root / "tasks.jsonl"), "out": str(root / "rl"),
              "steps": STEPS, "groups_per_step": GROUPS_PER_STEP, "checkpoint_every": 2, "max_staleness": 1,
              "curriculum": False, "max_wait_seconds": 60, "seed": 0,
              "manager": {"group_size": 4, "inflight_groups": 4, "seed": 0},
              "trainer": {"lr": 1e-3},
              "rollout": {"max_turns": 1, "system_prompt": "", "sampling": {"temperature": 1.0, "max_new_tokens": 24}}}
    (root / "rl.yaml").write_text(yaml.safe_dump(config))
    return root


def _train(root: Path, log: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with (root / log).open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "toolgym.cli", "train", str(root / "rl.yaml"), *extra],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def _metric_lines(root: Path) -> list[str]:
    path = root / "rl" / "metrics.jsonl"
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def killed_and_resumed(switchboard_run):
    """(trained groups checkpointed before the kill, final run state, metrics lines) of a run SIGKILLed after its
    third step (checkpoint at step 2, step 4 under way) and resumed to the end."""
    root = switchboard_run
    first = _train(root, "first.log")
    deadline = time.monotonic() + 60
    while len(_metric_lines(root)) < 3:
        assert first.poll() is None, (root / "first.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    saved = json.loads((root / "rl" / "checkpoint" / "state.json").read_text())["run"]
    assert saved["step"] == 2
    second = _train(root, "second.log", "--resume")
    assert second.wait(timeout=90) == 0, (root / "second.log").read_text()[-2000:]
    final = json.loads((root / "rl" / "checkpoint" / "state.json").read_text())["run"]
    return saved["trained"], final, _metric_lines(root)


def test_sigkill_then_resume_trains_every_group_exactly_once(killed_and_resumed):
    before_kill, final, _ = killed_and_resumed
    trained = final["trained"]
    assert len(before_kill) == 2 * GROUPS_PER_STEP and final["step"] == STEPS
    assert len(trained) == len(set(trained)) == STEPS * GROUPS_PER_STEP, "a group was trained twice or lost"
    assert trained[:len(before_kill)] == before_kill, "groups checkpointed before the kill were lost"


def test_sigkill_then_resume_leaves_one_metrics_row_per_step(killed_and_resumed):
    _, _, lines = killed_and_resumed
    rows = [json.loads(line) for line in lines]  # every line is whole JSON
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), "metrics repeat or skip a step"
