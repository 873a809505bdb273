"""Domain specs, their compilation to SQLite-backed tools, and the built-in domains."""

from toolgym.domains.compile import SpecError, compile_spec, load_spec_file
from toolgym.domains.model import Domain, Param, Tool
from toolgym.domains.registry import builtin_names, load_domain

__all__ = ["Domain", "Param", "SpecError", "Tool", "builtin_names", "compile_spec", "load_domain", "load_spec_file"]
