"""JSONL files of pydantic records (environments, tasks): one object a line, written atomically."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def write_jsonl(path: str | Path, records: Iterable[BaseModel]) -> int:
    """Write records to `path` via a temporary file, so a crash never leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with tmp.open("w") as fh:
        for record in records:
            fh.write(record.model_dump_json() + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_jsonl(path: str | Path, model: type[M]) -> Iterator[M]:
    """Records from `path`; a bad line raises ValueError naming the file and line."""
    with Path(path).open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield model.model_validate_json(line)
            except ValidationError as exc:
                raise ValueError(f"{path}:{lineno}: not a valid {model.__name__}: {exc}") from None
