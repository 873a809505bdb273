"""Splitting a step's rows into micro-batches by a token budget, so a padded batch never costs more memory than
`max_tokens` positions of activations (about 1 MB a position for SmolLM2-135M under training).

When the budget binds, rows are grouped longest first, so each micro-batch pads to lengths close to its own rows': a
random batch of episodes 300-3,400 tokens long otherwise spends about half its compute on padding.
"""

from __future__ import annotations

from collections.abc import Sequence


def token_budget_chunks(lengths: Sequence[int], max_tokens: int, max_rows: int | None = None) -> list[list[int]]:
    """Row indices grouped so that each group's rows x longest row stays within `max_tokens` (a row longer than the
    budget gets a group of its own) and has at most `max_rows` rows; every index appears exactly once. When
    consecutive groups of `max_rows` already fit, they are kept in the caller's order (what callers did before there
    was a budget, so small batches compute exactly as they did)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    step = max_rows or max(len(lengths), 1)
    in_order = [list(range(i, min(i + step, len(lengths)))) for i in range(0, len(lengths), step)]
    if all(len(chunk) * max(lengths[i] for i in chunk) <= max_tokens for chunk in in_order):
        return in_order
    chunks: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        current = chunks[-1] if chunks else None
        if (current is not None and (max_rows is None or len(current) < max_rows)
                and (len(current) + 1) * lengths[current[0]] <= max_tokens):
            current.append(index)
        else:
            chunks.append([index])
    return chunks
