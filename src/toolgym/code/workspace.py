"""A code task's workspace and the environment an episode acts on: the mutated standard-library module plus a copy
of its tests, in a sandbox from the warm pool, behind the terminal tools."""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from toolgym.code.mutate import Edit
from toolgym.code.pool import SandboxPool, default_pool
from toolgym.code.sandbox import Sandbox
from toolgym.code.tools import WRITES, call_tool, openai_tools
from toolgym.envs.environment import ToolResult

STDLIB = Path(sysconfig.get_paths()["stdlib"])


class CodeProblem(BaseModel):
    """What a code task's environment record carries (`params`): the module, the bug (an edit of the pristine
    source) and the tests that judge a fix."""

    module: str
    source_sha256: str
    edit: dict[str, str]
    """`old` -> `new` turns the pristine module into the buggy one."""
    kind: str
    function: str
    line: int
    tests: list[str]
    """unittest names run by verification (test modules of the standard library's `test` package)."""
    n_selected: int
    """How many test methods pass on the pristine module (all must pass after a fix)."""
    excluded: list[str] = []
    """Test ids that do not pass on the pristine module (skipped or failing here), ignored by verification."""
    failing: list[str]
    """Test ids the bug makes fail (progress counts how many of them pass again)."""

    @property
    def path(self) -> str:
        return f"{self.module}.py"

    @property
    def test_path(self) -> str:
        return f"tests/test_{self.module}.py"


def stdlib_source(module: str) -> str:
    return (STDLIB / f"{module}.py").read_text(encoding="utf-8")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def buggy_source(problem: CodeProblem) -> str:
    """The module with the task's bug, from this interpreter's pristine copy (refused if that copy differs)."""
    source = stdlib_source(problem.module)
    if sha256(source) != problem.source_sha256:
        raise ValueError(f"{problem.module}.py of this Python differs from the one the task was made from; "
                         "synthesize code tasks with the interpreter that runs them")
    edit = Edit(**problem.edit)
    if source.count(edit.old) != 1:
        raise ValueError(f"the bug of this task cannot be placed in {problem.module}.py")
    return source.replace(edit.old, edit.new)


def workspace_files(problem: CodeProblem, module_text: str | None = None) -> dict[str, str]:
    """The files of a task's workspace: the (buggy, or given) module and a copy of its tests to read."""
    tests = (STDLIB / "test" / f"test_{problem.module}.py").read_text(encoding="utf-8")
    return {problem.path: buggy_source(problem) if module_text is None else module_text, problem.test_path: tests}


class CodeEnvironment:
    """One episode's workspace: a pooled sandbox loaded with the buggy module, driven through the terminal tools.
    After `submit`, changes are refused."""

    def __init__(self, problem: CodeProblem, pool: SandboxPool | None = None):
        self.problem = problem
        self.pool = pool or default_pool()
        self.initial = workspace_files(problem)
        self.sandbox: Sandbox = self.pool.acquire()
        self.sandbox.request("put", files=self.initial)
        self.submitted = False

    def openai_tools(self) -> list[dict[str, Any]]:
        return openai_tools()

    def call(self, name: str, arguments: dict[str, Any] | None = None) -> ToolResult:
        """Run a terminal tool; errors come back as results."""
        if self.submitted and name in WRITES | {"submit"}:
            return ToolResult(ok=False, error="the workspace was submitted; no further changes are accepted")
        result = call_tool(self.sandbox, name, arguments)
        if name == "submit" and result.ok:
            self.submitted = True
        return result

    def final_files(self) -> dict[str, str | None]:
        """The workspace's current text of every file it started with (None where deleted or unreadable)."""
        return self.sandbox.request("get", paths=list(self.initial))["files"]

    def close(self) -> None:
        """Give the sandbox back to the pool (reset there for another episode)."""
        if self.sandbox is not None:
            self.pool.release(self.sandbox)
            self.sandbox = None
