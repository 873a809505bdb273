"""What toolgym hands a vLLM server, checked without vLLM: the served copy of a checkpoint (untied output head, so
vLLM's in-place reload reaches it) computes what the original computes, and a published update replaces the weights;
a training config asks for the server engine only where one client publishes to it."""

from __future__ import annotations

import json

import pytest
import torch

from toolgym.policy.hf import load_causal_lm
from toolgym.policy.vllm_server import export_for_vllm, save_served_checkpoint
from toolgym.rl.config import RLConfig


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def test_served_copy_is_untied_and_computes_what_the_original_does(tiny_dir, tmp_path):
    original = load_causal_lm(tiny_dir).eval()
    assert original.config.tie_word_embeddings
    served = export_for_vllm(tiny_dir, tmp_path / "served")
    assert json.loads((served / "config.json").read_text())["tie_word_embeddings"] is False
    assert (served / "tokenizer.json").exists()
    copy = load_causal_lm(served).eval()
    assert copy.lm_head.weight.data_ptr() != copy.model.embed_tokens.weight.data_ptr()
    ids = [3, 17, 42, 99, 5]
    assert torch.allclose(logits(copy, ids), logits(original, ids), atol=1e-6)


def test_a_published_update_overwrites_the_served_weights(tiny_dir, tmp_path):
    model = load_causal_lm(tiny_dir).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    served = export_for_vllm(tiny_dir, tmp_path / "served")
    config = json.loads((served / "config.json").read_text())
    published = save_served_checkpoint(model.state_dict(), config, tmp_path / "published" / "v1")
    assert not (tmp_path / "published" / "v1.partial").exists()
    ids = [3, 17, 42, 99, 5]
    assert torch.allclose(logits(load_causal_lm(published), ids), logits(model, ids), atol=1e-5)
    assert not torch.allclose(logits(load_causal_lm(served), ids), logits(model, ids), atol=1e-3)


@pytest.mark.parametrize("extra", [{"controllers": 2}, {"runtime": "ray"}])
def test_vllm_server_engine_takes_one_publishing_client(extra):
    with pytest.raises(ValueError, match="vllm-server"):
        RLConfig(model="m", tasks="t", engine="vllm-server", **extra)
    RLConfig(model="m", tasks="t", engine="vllm-server")
