"""Numeric precision of forwards: bf16 autocast where the hardware has bf16 arithmetic, fp32 elsewhere.

Autocast is entered around each forward (and the loss computed from it), never around a whole training loop:
autocast caches the bf16 copy of every weight for as long as its outermost context is open, so a context spanning
optimizer steps keeps serving the weights of the first forward.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "bf16", "fp32"]
"""auto: bf16 autocast where the device computes in bf16 natively (CPUs with AVX512-BF16 or AMX, GPUs since Ampere),
fp32 elsewhere; bf16 insists (an error where unsupported); fp32 turns autocast off."""


def bf16_native(device: str | torch.device) -> bool:
    """Whether `device` has native bf16 arithmetic (emulated bf16 on an older CPU is slower than fp32)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def use_bf16(precision: Precision, device: str | torch.device) -> bool:
    """Resolve `precision` on `device`: True for bf16 autocast, False for fp32; ValueError for an explicit bf16 the
    device lacks."""
    import torch

    if precision == "fp32":
        return False
    native = bf16_native(device)
    if precision == "bf16" and not native and torch.device(device).type != "cpu":
        raise ValueError(f"precision bf16 asked for, but {device} has no bf16 arithmetic; use auto or fp32")
    return native or precision == "bf16"


def autocast(device: str | torch.device, enabled: bool) -> AbstractContextManager:
    """bf16 autocast on `device` when `enabled`, else nothing; enter it per forward, not per loop."""
    import torch

    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
