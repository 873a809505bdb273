"""Training device names are checked when a config is built: a missing GPU or a typo fails at once, saying why."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from toolgym.cli import app
from toolgym.demo_config import DemoConfig
from toolgym.models.recovery import recover_checkpoint
from toolgym.policy.hf import HFPolicy
from toolgym.rl.config import TrainerConfig
from toolgym.sft.trainer import SFTConfig


@pytest.mark.parametrize("make", [lambda d: SFTConfig(device=d), lambda d: TrainerConfig(device=d)])
def test_configs_accept_cpu_and_reject_what_torch_cannot_place(make):
    assert make("cpu").device == "cpu"
    with pytest.raises(ValidationError, match="not a torch device"):
        make("gpu0")
    with pytest.raises(ValidationError, match="only cpu, cuda and mps"):
        make("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_a_missing_gpu_names_the_reason():
    with pytest.raises(ValidationError, match="CUDA is not available"):
        SFTConfig(device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        DemoConfig(device="cuda:0")


def test_sft_command_rejects_a_bad_device_before_writing_anything(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("")
    out = tmp_path / "sft"
    result = CliRunner().invoke(app, ["sft", "--model", str(tmp_path), "--tasks", str(tasks), "--out", str(out),
                                      "--device", "gpu0"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "not a torch device" in result.output
    assert not out.exists()


@pytest.mark.parametrize("load", [lambda path, d: HFPolicy(path, device=d),
                                  lambda path, d: recover_checkpoint(path, path / "data.jsonl", path / "out", device=d)])
def test_model_loaders_reject_a_bad_device_before_loading(tmp_path, load):
    # tmp_path holds no checkpoint: reaching the loader would raise OSError instead of naming the device
    with pytest.raises(ValueError, match="'gpu0' is not a torch device"):
        load(tmp_path, "gpu0")


def test_zigzag_finetune_rejects_a_bad_device_before_loading(tmp_path):
    (tmp_path / "data.jsonl").write_text("")
    result = CliRunner().invoke(app, ["zigzag", "finetune", str(tmp_path), "--data", str(tmp_path / "data.jsonl"),
                                      "--out", str(tmp_path / "out"), "--device", "gpu0"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "not a torch device" in result.output
    assert not (tmp_path / "out").exists()
