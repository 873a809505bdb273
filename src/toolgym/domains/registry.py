"""Built-in domains shipped as YAML, loaded by name (or any spec file by path), compiled once per process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from toolgym.domains.compile import load_spec_file
from toolgym.domains.model import Domain

BUILTIN_DIR = Path(__file__).parent / "builtin"


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


@lru_cache(maxsize=64)
def load_domain(name_or_path: str) -> Domain:
    """A built-in domain by name, or a spec file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise KeyError(f"domain spec file '{name_or_path}' not found")
        domain = load_spec_file(path)
        domain.source = str(path.resolve())
        return domain
    candidate = BUILTIN_DIR / f"{name_or_path}.yaml"
    if not candidate.exists():
        raise KeyError(f"unknown domain '{name_or_path}'; built-in domains: {', '.join(builtin_names())}")
    return load_spec_file(candidate)
