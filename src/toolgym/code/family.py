"""The `code` environment family for the registry (toolgym.envs.families): a task's record opens a sandboxed
workspace with its bug, episodes use the terminal tools, and verdicts come from the tests in a fresh sandbox."""

from __future__ import annotations

from typing import Any

from toolgym.code.verify import CodeVerdict, verify_code
from toolgym.code.workspace import CodeEnvironment, CodeProblem
from toolgym.envs.environment import EnvironmentRecord
from toolgym.envs.families import unwrap
from toolgym.tasks.model import Task


class CodeFamily:
    """Bug-fix tasks in standard-library modules, solved with terminal tools in a sandbox."""

    def open(self, record: EnvironmentRecord) -> CodeEnvironment:
        return CodeEnvironment(CodeProblem.model_validate(record.params))

    def title(self, env: Any) -> str:
        return f"the maintainers of Python's {unwrap(env).problem.module} module"

    def verify(self, task: Task, env: Any, answer: str) -> CodeVerdict:
        return verify_code(task, unwrap(env), answer)


FAMILY = CodeFamily()
