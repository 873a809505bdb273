"""Where training runs: a torch device name checked when a config is built, so a run asking for a GPU that is not
there fails at once with the reason instead of minutes later inside torch."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def checked_device(name: str) -> str:
    """`name` if torch can place tensors there on this machine; ValueError saying why not otherwise.

    torch is imported here, not at module level, so configs that carry a device keep `toolgym --help` light."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"'{name}' is not a torch device (use cpu, cuda, cuda:N or mps): {exc}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device '{name}' asked for, but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device '{name}' asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device '{name}' asked for, but MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device '{name}': only cpu, cuda and mps are supported for training")
    return name


Device = Annotated[str, AfterValidator(checked_device)]
"""A pydantic field type for a training device name."""
