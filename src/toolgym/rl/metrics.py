"""Per-step training metrics as JSONL (always) and TensorBoard scalars (when tensorboard is installed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends one JSON object per step to out/metrics.jsonl and mirrors numeric values to out/tensorboard.

    `resume_after=N` continues a run restored from its step-N checkpoint: rows of later steps (logged before a crash,
    and about to be trained again) and a line torn by the crash are dropped, so every step keeps exactly one row."""

    def __init__(self, out: Path, resume_after: int | None = None):
        self.path = Path(out) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = _rows_until(self.path, resume_after) if resume_after is not None else []
        self.fh = self.path.open("w")
        self.fh.writelines(json.dumps(row, default=str) + "\n" for row in kept)
        self.fh.flush()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(out) / "tensorboard"))
        except ImportError:
            self.tb = None

    def write(self, row: dict[str, Any]) -> None:
        self.fh.write(json.dumps(row, default=str) + "\n")
        self.fh.flush()
        if self.tb is not None:
            for key, value in _flatten(row).items():
                self.tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rows_until(path: Path, step: int) -> list[dict[str, Any]]:
    """The whole rows of `path` for steps up to `step` (an unreadable, torn line is skipped)."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            rows.append(row)
    return rows


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out
