"""Loading, fine-tuning and saving a checkpoint through toolgym prints none of transformers' notices a user cannot act
on (tqdm weight bars, the tokenizer's sequence-length warning), and leaves transformers' own settings as they were."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from toolgym.assets import TINY_BASE
from toolgym.policy.hf import HFPolicy, quiet_transformers
from toolgym.sft.data import SFTExample
from toolgym.sft.trainer import SFTConfig, train_sft

NOISE = ("Loading weights", "Writing model shards", "Token indices sequence length", "it/s]")
LONG_TEXT = "hello world " * 700  # past the base tokenizer's model_max_length of 4096


@pytest.fixture
def loud_transformers():
    """Transformers at its defaults (warnings and bars on), whatever earlier tests set; restored afterwards."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_warning()
    hf_logging.enable_progress_bar()
    yield
    hf_logging.set_verbosity(verbosity)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()


def test_load_encode_train_and_save_print_no_transformers_noise(loud_transformers, tmp_path, capfd, caplog):
    """What a user's terminal would show: toolgym loads a checkpoint, encodes past the length limit, fine-tunes
    (loading the model again) and saves a checkpoint and the final model; no bar on stderr, no warning logged."""
    policy = HFPolicy(TINY_BASE)
    assert len(policy.tokenizer.encode(LONG_TEXT, add_special_tokens=False)) > policy.tokenizer.model_max_length
    messages = [{"role": "system", "content": "You help."}, {"role": "user", "content": "Say hi."},
                {"role": "assistant", "content": "hi"}]
    example = SFTExample(task_id="t", domain="d", messages=messages, tools=[], train=[True])
    train_sft(TINY_BASE, [example], tmp_path / "sft",
              SFTConfig(max_steps=1, batch_size=1, save_every=1, warmup_steps=1), show_progress=False)
    assert (tmp_path / "sft" / "checkpoint-1" / "model.safetensors").is_file()
    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in NOISE:
        assert text not in out + err + logged, text


def test_quieting_is_scoped_to_toolgym_calls(loud_transformers, caplog):
    """The user's verbosity and progress-bar setting survive toolgym's calls; their own tokenizer still warns."""
    HFPolicy(TINY_BASE)
    assert hf_logging.get_verbosity() == hf_logging.WARNING and hf_logging.is_progress_bar_enabled()
    with pytest.raises(RuntimeError), quiet_transformers():
        raise RuntimeError("a failed load")
    assert hf_logging.get_verbosity() == hf_logging.WARNING and hf_logging.is_progress_bar_enabled()
    AutoTokenizer.from_pretrained(TINY_BASE).encode(LONG_TEXT, add_special_tokens=False)
    assert any("Token indices sequence length" in r.getMessage() for r in caplog.records)


EVAL = ["eval", "--policy", "scripted:gold", "--suite", "simple", "--n", "4", "--k", "1", "--max-turns", "8"]


def test_eval_json_is_all_of_stdout(tmp_path):
    """--json: stdout is exactly one JSON array, one object per run and domain (no progress residue before it);
    the report path goes to stderr."""
    from typer.testing import CliRunner

    from toolgym.cli import app

    result = CliRunner().invoke(app, [*EVAL, "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("[")
    rows = json.loads(result.stdout)
    assert [list(r) for r in rows[:1]] == [["run", "domain", "k", "pass@1", "pass@k", "pass^k", "reward", "progress",
                                           "turns", "tokens"]]
    assert [r["domain"] for r in rows] == ["airline", "bank", "car_rental", "clinic", "overall"]
    assert rows[-1]["pass^k"] == 1.0 and rows[-1]["k"] == 1 and rows[-1]["run"] == "clean"
    assert f"report -> {tmp_path / 'report.html'}" in result.stderr
