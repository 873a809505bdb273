"""Streaming sparse (sink + local window) attention for Zig-Zag layers and the bounded KV-cache layer behind it.

The rule: the query at sequence position t sees key j iff j <= t and (j < sink or t - j < window), i.e. the first
`sink` tokens plus the last `window` tokens, itself included. Below sink + window tokens this is full causal attention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, DynamicLayer


@dataclass(frozen=True)
class SinkWindow:
    """One sparse layer's rule: the first `sink` tokens plus the last `window` tokens; `block` queries per tile."""

    sink: int
    window: int
    block: int = 128

    def __post_init__(self) -> None:
        if self.sink < 0 or self.window < 1 or self.block < 1:
            raise ValueError(f"need sink >= 0, window >= 1, block >= 1; got {self}")

    @property
    def cache_tokens(self) -> int:
        """Tokens a sparse layer keeps between forward calls: the sinks plus the window minus the next query."""
        return self.sink + self.window - 1


class SinkWindowLayer(DynamicLayer):
    """A DynamicCache layer that keeps only the sink tokens and the last window - 1 tokens (keys stored after RoPE,
    so eviction never changes them); memory stays bounded however long the sequence grows.

    Stored layout: the first min(sink, seen) tokens, then a contiguous run of the most recent tokens."""

    is_sliding = True  # bounded: transformers sizes the full layers' masks from a full-attention layer
    is_croppable = False

    def __init__(self, rule: SinkWindow):
        super().__init__()
        self.rule = rule
        self.cumulative_length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new tokens, return stored + new states for attention, then evict down to the bound."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.cumulative_length += key_states.shape[-2]
        keys = torch.cat([self.keys, key_states], dim=-2)
        values = torch.cat([self.values, value_states], dim=-2)
        self.keys, self.values = self._evict(keys), self._evict(values)
        return keys, values

    def _evict(self, states: torch.Tensor) -> torch.Tensor:
        n, keep = states.shape[-2], self.rule.cache_tokens
        if n <= keep:
            return states
        recent = states[..., n - (self.rule.window - 1):, :]
        return torch.cat([states[..., :self.rule.sink, :], recent], dim=-2)

    def get_seq_length(self) -> int:
        """Tokens seen so far (not tokens stored): this drives position ids, as for sliding-window layers."""
        return self.cumulative_length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """Mask sizes if transformers ever builds a mask from this layer (only when no layer is full attention)."""
        stored = 0 if self.keys is None else self.keys.shape[-2]
        return stored + query_length, self.cumulative_length - stored

    def get_max_length(self) -> int:
        """The most tokens this layer ever stores between calls."""
        return self.rule.cache_tokens

    def crop(self, tokens_to_remove: int) -> None:
        """Undo the last tokens; only possible before anything was evicted."""
        if tokens_to_remove == 0:
            return
        if self.cumulative_length > self.rule.cache_tokens:
            raise RuntimeError("a Zig-Zag sparse cache layer cannot be cropped once it has evicted tokens")
        super().crop(tokens_to_remove)
        self.cumulative_length = self.keys.shape[-2]


def sink_window_layer(cache: Cache, layer_idx: int, rule: SinkWindow) -> SinkWindowLayer:
    """The SinkWindowLayer at `layer_idx` of a DynamicCache, swapping in a fresh one if that slot is still empty
    (so model.generate and hand-written loops with an ordinary DynamicCache just work)."""
    layers = cache.layers
    if len(layers) <= layer_idx:
        replicate = getattr(cache, "layer_class_to_replicate", None)
        if replicate is None:
            raise TypeError(f"cache {type(cache).__name__} has no layer {layer_idx}")
        layers.extend(replicate() for _ in range(layer_idx + 1 - len(layers)))
    layer = layers[layer_idx]
    if isinstance(layer, SinkWindowLayer):
        if layer.rule != rule:
            raise ValueError(f"cache layer {layer_idx} was built for {layer.rule}, the model now uses {rule}")
        return layer
    if type(layer) is not DynamicLayer or layer.get_seq_length() > 0:
        raise TypeError(f"Zig-Zag sparse layer {layer_idx} needs an empty DynamicCache slot, found "
                        f"{type(layer).__name__} holding {layer.get_seq_length()} tokens (use a DynamicCache)")
    layers[layer_idx] = SinkWindowLayer(rule)
    return layers[layer_idx]


def sink_window_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rule: SinkWindow, total: int,
                          scale: float | None = None, dropout_p: float = 0.0, max_chunk_tokens: int = 8192
                          ) -> torch.Tensor:
    """Sink + window attention of the newest queries in O(n * (sink + window + block)), never an n x n mask.

    query: (batch, heads, n, dim), the tokens at positions total - n .. total - 1. key / value: (batch, kv_heads, m,
    dim) laid out as SinkWindowLayer returns them: the first min(sink, total) positions, then a contiguous run ending
    at total - 1 (with no cache: all n tokens). Returns (batch, n, heads, dim), like transformers' attention functions.

    Three pieces: queries before sink + window see every earlier token (plain causal attention); then up to block - 1
    queries with a mask of their own; then tiles of `block` queries that all share one banded mask, each tile's keys
    being the sinks plus an overlapping view of the recent keys (gathered max_chunk_tokens queries at a time)."""
    b, h, n, d = query.shape
    m, window = key.shape[-2], rule.window
    s = min(rule.sink, total)
    r0, q0 = total - (m - s), total - n  # position of the first non-sink key; of the first query
    if q0 < 0 or r0 < s or (q0 < rule.sink + window and m != total) or r0 > max(s, q0 - window + 1):
        raise ValueError(f"{m} keys and {n} queries do not fit {total} tokens under {rule}")
    out = query.new_empty(b, n, h, d)
    sdpa = partial(F.scaled_dot_product_attention, scale=scale, dropout_p=dropout_p, enable_gqa=h != key.shape[1])

    def masked(p0: int, p1: int, kpos: torch.Tensor) -> torch.Tensor | None:  # None when every key is visible
        if p1 - p0 == 1 and p1 == total:
            return None  # the last query: its keys were chosen as exactly the visible ones
        qpos = torch.arange(p0, p1, device=query.device)[:, None]
        return (kpos <= qpos) & ((kpos < rule.sink) | (qpos - kpos < window))

    c = min(total, max(q0, rule.sink + window))  # queries before c see all earlier tokens (and keys are 0..total-1)
    if c > q0:
        kpos = torch.arange(c, device=query.device)
        mask = masked(q0, c, kpos) if q0 else None
        res = sdpa(query[..., :c - q0, :], key[..., :c, :], value[..., :c, :], attn_mask=mask, is_causal=q0 == 0)
        out[:, :c - q0] = res.transpose(1, 2)
    block = rule.block
    n_tiles = (total - c) // block
    p = total - n_tiles * block  # queries c..p-1 get their own mask, p.. go in tiles
    if p > c:
        lo = max(s, c - window + 1 - r0 + s)  # index in `key` of the first recent key these queries can see
        end = p - total + m
        keys, values = key[..., :end, :], value[..., :end, :]  # sinks directly followed by the visible recent keys
        if lo > s:
            keys = torch.cat([key[..., :s, :], key[..., lo:end, :]], -2)
            values = torch.cat([value[..., :s, :], value[..., lo:end, :]], -2)
        kpos = torch.cat([torch.arange(s, device=query.device),
                          torch.arange(r0 + lo - s, p, device=query.device)])
        res = sdpa(query[..., c - q0:p - q0, :], keys, values, attn_mask=masked(c, p, kpos))
        out[:, c - q0:p - q0] = res.transpose(1, 2)
    if n_tiles:
        _band_tiles(query, key, value, out, s, r0, p, q0, rule, max(1, max_chunk_tokens // block), sdpa)
    return out


def _band_tiles(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, out: torch.Tensor, s: int, r0: int,
                p: int, q0: int, rule: SinkWindow, per_chunk: int, sdpa: Callable[..., torch.Tensor]) -> None:
    """Queries p.. (a whole number of tiles) into `out`: tile t sees the sinks plus the recent keys at positions
    [a_t - window + 1, a_t + block), all of which exist, so every tile shares one banded mask."""
    b, h, n, d = query.shape
    hk, total, block, window = key.shape[1], q0 + n, rule.block, rule.window
    span = window - 1 + block
    rows = torch.arange(block, device=query.device)[:, None]
    cols = torch.arange(span, device=query.device)
    band = torch.cat([torch.ones(block, s, dtype=torch.bool, device=query.device), (cols >= rows) &
                      (cols < rows + window)], dim=-1)
    for a in range(p, total, per_chunk * block):
        tiles = min(per_chunk, (total - a) // block)
        start = s + a - window + 1 - r0  # index in `key` of the first tile's first window key

        def gather(x: torch.Tensor) -> torch.Tensor:
            g = x.new_empty(b, tiles, hk, s + span, d)
            g[..., :s, :] = x[:, None, :, :s]
            g[..., s:, :] = x[..., start:start + (tiles - 1) * block + span, :].unfold(2, span, block).permute(
                0, 2, 1, 4, 3)
            return g.view(b * tiles, hk, s + span, d)

        q = query[..., a - q0:a - q0 + tiles * block, :].reshape(b, h, tiles, block, d).transpose(1, 2)
        res = sdpa(q.reshape(b * tiles, h, block, d), gather(key), gather(value), attn_mask=band)
        out[:, a - q0:a - q0 + tiles * block].view(b, tiles, block, h, d).copy_(
            res.view(b, tiles, h, block, d).transpose(2, 3))
