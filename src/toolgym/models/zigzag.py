"""Zig-Zag attention: convert a transformers Llama/Qwen2-family causal LM so that half of its layers use streaming
sparse attention (sink tokens + a local window, bounded KV cache) while the rest keep full attention.

    model = to_zigzag(AutoModelForCausalLM.from_pretrained(path), ZigZagConfig())   # in place
    model.save_pretrained(out)       # the settings travel in config.json under "zigzag"
    model = load_zigzag(out)         # loads and converts again

The conversion only swaps the sparse layers' attention forward; weights and state-dict keys are unchanged. Sparse
layers need an unpadded (or right-padded) batch: left padding would make pad tokens the sinks, so it is rejected.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import MethodType
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field
from torch import nn

from toolgym.models.zigzag_attention import (
    SinkWindow,
    sink_window_attention,
    sink_window_layer,
)

_RULE_ATTR = "zigzag_rule"


class ZigZagConfig(BaseModel):
    """Which layers are sparse and their rule; stored in model.config.zigzag (with sparse_layers resolved)."""

    sink_tokens: int = Field(128, ge=0, description="Leading tokens every query of a sparse layer sees (1 block).")
    local_tokens: int = Field(896, ge=1, description="Most recent tokens a query sees, itself included (7 blocks).")
    sparse_layers: list[int] | None = Field(None, description="Sparse layer indexes; None: chosen by `selection`.")
    selection: Literal["interleaved", "calibrated"] = Field(
        "interleaved", description="interleaved: layers 1, 3, 5, ...; calibrated: the half least hurt by sparsity.")
    block_size: int = Field(128, ge=1, description="Query tokens per attention tile in prefill (speed only).")

    def rule(self) -> SinkWindow:
        """The sink + window rule of the sparse layers."""
        return SinkWindow(self.sink_tokens, self.local_tokens, self.block_size)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a causal LM (model.model.layers for Llama/Qwen2)."""
    layers = getattr(getattr(model, "base_model", model), "layers", None)
    if layers is None:
        raise TypeError(f"{type(model).__name__} has no decoder layers at .base_model.layers")
    return layers


def _attention(layer: nn.Module) -> nn.Module:
    attn = getattr(layer, "self_attn", None)
    needed = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling", "layer_idx")
    if attn is None or not all(hasattr(attn, a) for a in needed) or hasattr(attn, "q_norm"):
        raise TypeError(f"unsupported attention module {type(attn).__name__}: Zig-Zag supports Llama/Qwen2-style "
                        "self_attn (q/k/v/o projections + RoPE)")
    if not hasattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb"):
        raise TypeError(f"{type(attn).__module__} has no apply_rotary_pos_emb")
    return attn


def _sparse_forward(self: nn.Module, hidden_states: torch.Tensor,
                    position_embeddings: tuple[torch.Tensor, torch.Tensor], attention_mask: torch.Tensor | None = None,
                    cache: Any = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The Llama/Qwen2 attention forward with sink + window attention and a bounded cache layer (bound as a method)."""
    rule: SinkWindow = getattr(self, _RULE_ATTR)
    hidden_shape = (*hidden_states.shape[:-1], -1, self.head_dim)
    query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    cos, sin = position_embeddings
    query, key = sys.modules[type(self).__module__].apply_rotary_pos_emb(query, key, cos, sin)
    total = query.shape[-2]
    if cache is not None:
        layer = sink_window_layer(cache, self.layer_idx, rule)
        key, value = layer.update(key, value)
        total = layer.cumulative_length
    dropout = getattr(self, "attention_dropout", 0.0) if self.training else 0.0
    out = sink_window_attention(query, key, value, rule, total, scale=self.scaling, dropout_p=dropout)
    return self.o_proj(out.reshape(*hidden_states.shape[:-1], -1)), None


def _reject_left_padding(module: nn.Module, args: tuple, kwargs: dict) -> None:
    mask = kwargs.get("attention_mask")
    if (isinstance(mask, torch.Tensor) and mask.dim() == 2 and sparse_layers(module)
            and bool((mask[:, 1:] > mask[:, :-1]).any())):
        raise ValueError("Zig-Zag sparse layers do not support left padding (pad tokens would become the sinks); "
                         "run unpadded or right-padded batches")


def set_sparse_layers(model: nn.Module, layers: list[int], rule: SinkWindow) -> None:
    """Make exactly `layers` sparse under `rule` (all others full attention); does not touch model.config."""
    blocks = decoder_layers(model)
    bad = [i for i in layers if not 0 <= i < len(blocks)]
    if bad:
        raise ValueError(f"layer indexes {bad} out of range for {len(blocks)} layers")
    for i, block in enumerate(blocks):
        attn = _attention(block)
        attn.__dict__.pop("forward", None)
        attn.__dict__.pop(_RULE_ATTR, None)
        if i in layers:
            setattr(attn, _RULE_ATTR, rule)
            attn.forward = MethodType(_sparse_forward, attn)
    if layers and _reject_left_padding not in model._forward_pre_hooks.values():
        model.register_forward_pre_hook(_reject_left_padding, with_kwargs=True)


def _sparse_rules(model: nn.Module) -> dict[int, SinkWindow]:
    """Layer index -> rule, for the layers currently using Zig-Zag sparse attention."""
    return {i: block.self_attn.__dict__[_RULE_ATTR] for i, block in enumerate(decoder_layers(model))
            if _RULE_ATTR in block.self_attn.__dict__}


def sparse_layers(model: nn.Module) -> list[int]:
    """Indexes of the layers currently using Zig-Zag sparse attention."""
    return list(_sparse_rules(model))


def interleaved_layers(num_layers: int) -> list[int]:
    """The default choice: every other layer starting at 1 (1, 3, 5, ...), half of them."""
    return list(range(1, num_layers, 2))


@torch.no_grad()
def layer_importance(model: nn.Module, input_ids: torch.Tensor, config: ZigZagConfig | None = None) -> list[float]:
    """Per layer, how much the final next-token distribution moves when only that layer is made sparse: the mean
    KL(full || one-layer-sparse) over the positions where sparsity can matter (t >= sink + window).

    `input_ids` (batch, n) must be longer than sink + window tokens. The model's sparse layers are restored after."""
    config = config or ZigZagConfig()
    rule = config.rule()
    start = config.sink_tokens + config.local_tokens
    if input_ids.shape[-1] <= start:
        raise ValueError(f"calibration needs more than sink + local = {start} tokens, got {input_ids.shape[-1]}")
    before = _sparse_rules(model)
    was_training = model.training
    model.eval()
    try:
        set_sparse_layers(model, [], rule)
        ref = torch.log_softmax(model(input_ids=input_ids, use_cache=False).logits[:, start:].float(), -1)
        scores = []
        for i in range(len(decoder_layers(model))):
            set_sparse_layers(model, [i], rule)
            out = torch.log_softmax(model(input_ids=input_ids, use_cache=False).logits[:, start:].float(), -1)
            scores.append(float((ref.exp() * (ref - out)).sum(-1).mean()))
    finally:
        set_sparse_layers(model, list(before), next(iter(before.values()), rule))
        model.train(was_training)
    return scores


def calibrated_layers(importance: list[float]) -> list[int]:
    """The half of the layers (as many as interleaving picks) with the lowest importance, in layer order."""
    n_sparse = len(interleaved_layers(len(importance)))
    return sorted(sorted(range(len(importance)), key=lambda i: (importance[i], i))[:n_sparse])


def to_zigzag(model: nn.Module, config: ZigZagConfig | None = None, calibration_ids: torch.Tensor | None = None
              ) -> nn.Module:
    """Convert `model` in place (and return it): the chosen layers get sink + window attention with a bounded KV cache.

    With selection="calibrated" and no explicit sparse_layers, `calibration_ids` (longer than sink + local tokens)
    rank the layers with `layer_importance`. The resolved settings are written to model.config.zigzag."""
    config = config or ZigZagConfig()
    n_layers = len(decoder_layers(model))
    layers = config.sparse_layers
    if layers is None and config.selection == "interleaved":
        layers = interleaved_layers(n_layers)
    elif layers is None:
        if calibration_ids is None:
            raise ValueError("selection='calibrated' needs calibration_ids (or explicit sparse_layers)")
        layers = calibrated_layers(layer_importance(model, calibration_ids, config))
    layers = sorted(set(layers))
    set_sparse_layers(model, layers, config.rule())
    model.config.zigzag = config.model_copy(update={"sparse_layers": layers}).model_dump()
    return model


def load_zigzag(path: str | Path, **from_pretrained: Any) -> nn.Module:
    """Load a checkpoint saved after `to_zigzag` and convert it again from its config.zigzag settings."""
    from toolgym.policy.hf import load_causal_lm

    model = load_causal_lm(path, **from_pretrained)
    settings = getattr(model.config, "zigzag", None)
    if not settings:
        raise ValueError(f"{path} has no zigzag settings in its config.json (convert it with to_zigzag first)")
    return to_zigzag(model, ZigZagConfig.model_validate(settings))
