"""Verification of a code episode: only the workspace's final files count. The final module goes into a fresh
(never used) sandbox with pristine tests; the task's tests run there. Reward 1 when every selected test passes and
no other workspace file changed; progress is the share of the tests the bug broke that pass again."""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolgym.code.sandbox import Sandbox, SandboxError
from toolgym.code.workspace import CodeEnvironment, CodeProblem, workspace_files
from toolgym.tasks.model import Task
from toolgym.tasks.verify import Verdict

RUNNER = Path(__file__).with_name("testrunner.py").read_text()
TEST_TIMEOUT_S = 120.0


@dataclass
class SuiteRun:
    """Outcome per test id ("pass", "fail", "error", "skip"); `errors` and `output` explain the failures."""

    outcomes: dict[str, str]
    errors: dict[str, str]
    output: str


def run_tests(sandbox: Sandbox, names: list[str], timeout: float = TEST_TIMEOUT_S) -> SuiteRun:
    """Run unittest names in the sandbox's workspace; a run that produced no results reports every name as error."""
    reply = sandbox.request("tests", timeout, runner=RUNNER, names=names, timeout=timeout,
                            max_output=sandbox.limits.max_output)
    results = reply.get("results") if reply.get("ok") else None
    output = reply.get("output") or reply.get("error") or ""
    if results is None:
        why = "timed out" if reply.get("timed_out") else f"no results: {output[-500:]}"
        return SuiteRun({n: "error" for n in names}, {n: why for n in names}, output)
    return SuiteRun(results["outcomes"], results["errors"], output)


class CodeVerdict(Verdict):
    """A code episode's verdict, with the partial-credit progress, the agent's diff and the test report."""

    progress: float = 0.0
    outcomes: dict[str, str] = {}
    diff: str = ""
    test_output: str = ""

    def explain(self) -> str:
        """Passed (or the problems), the test counts, the agent's diff of the module and the test runner's output:
        what report pages show for an episode."""
        head = "passed" if self.passed else "\n".join(self.problems)
        counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(Counter(self.outcomes.values()).items()))
        output = f"\ntest output:\n{self.test_output[-2000:]}" if self.test_output.strip() else ""
        diff = self.diff or "(module unchanged)"
        return f"{head}\ntests: {counts or 'none ran'}; progress {self.progress:.2f}\n{diff}{output}"


def unified_diff(path: str, before: str, after: str | None) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), (after or "").splitlines(keepends=True),
                                        f"a/{path}", f"b/{path}"))


def judge(problem: CodeProblem, final: dict[str, str | None], fresh: Sandbox) -> CodeVerdict:
    """Run the task's tests on the final module in `fresh` and judge the outcome (see the module docstring)."""
    initial = workspace_files(problem)
    module = final.get(problem.path)
    outside = sorted(p for p in initial if p != problem.path and final.get(p) != initial[p])
    fresh.request("put", files=workspace_files(problem, module_text=module or ""))
    run = run_tests(fresh, problem.tests)
    excluded = set(problem.excluded)
    judged = {t: o for t, o in run.outcomes.items() if t not in excluded}
    failing = sorted(t for t, o in judged.items() if o != "pass")
    n_pass = sum(o == "pass" for o in judged.values())
    tests_ok = not failing and n_pass >= problem.n_selected
    problems = [f"changed outside {problem.path}: {p}" for p in outside]
    problems += [f"test {t}: {judged[t]}" + (f" ({_last_line(run.errors.get(t, ''))})" if run.errors.get(t) else "")
                 for t in failing[:10]]
    if len(failing) > 10:
        problems.append(f"... and {len(failing) - 10} more failing tests")
    if not failing and not tests_ok:
        problems.append(f"only {n_pass} of the {problem.n_selected} selected tests ran")
    repaired = sum(judged.get(t, "pass" if t in problem.tests else "missing") == "pass" for t in problem.failing)
    passed = tests_ok and not outside
    return CodeVerdict(passed=passed, state_ok=passed, answers_ok=True, problems=problems, missing_answers=[],
                       progress=repaired / len(problem.failing) if problem.failing else float(passed),
                       outcomes=run.outcomes, diff=unified_diff(problem.path, initial[problem.path], module),
                       test_output=run.output)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def verify_code(task: Task, env: Any, answer: str = "") -> CodeVerdict:
    """The verdict on a code episode from its environment's final workspace, judged in a fresh sandbox."""
    problem = CodeProblem.model_validate(task.env.params)
    if not isinstance(env, CodeEnvironment):
        raise TypeError(f"a code task needs a CodeEnvironment, got {type(env).__name__}")
    try:
        final = env.final_files()
    except SandboxError as exc:
        return CodeVerdict(passed=False, state_ok=False, answers_ok=True, missing_answers=[],
                           problems=[f"the workspace was lost: {exc}"])
    fresh = env.pool.acquire(fresh=True)
    try:
        return judge(problem, final, fresh)
    finally:
        fresh.close()
