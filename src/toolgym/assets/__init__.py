"""Files toolgym ships: the base checkpoint `toolgym pretrain --recipe tiny --seed 0` produced."""

from pathlib import Path

TINY_BASE = Path(__file__).parent / "tiny-base"
"""The embedded default base model (an ordinary transformers checkpoint, about 6 MB); `toolgym demo` starts from it."""
