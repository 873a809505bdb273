"""Run every benchmark in this folder (bench_*.py), each printing ratios against a baseline from the same run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def main() -> None:
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        module.run()
        print()


if __name__ == "__main__":
    main()
