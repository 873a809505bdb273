"""Coding environments: sandboxed workspaces from a warm pool, terminal tools, and bug-fix tasks made by mutating
standard-library modules that have real tests (verified by running those tests in a fresh sandbox)."""
