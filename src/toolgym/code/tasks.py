"""Bug-fix task synthesis from the interpreter's own standard library (in the spirit of SWE-smith's procedural bugs).

For each candidate (a module, a mutation kind, a seeded choice of site) the mutant is validated inside a sandbox:
the pristine module must pass the selected tests (cached per module) and the mutant must fail at least one within a
short timeout. The instruction reads like an issue report built from the failing behaviour (failing test names and
their error lines), never from the fix. Candidates are drawn and judged in a fixed order, so the same seed gives
the same tasks whatever the number of workers.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from toolgym.code.mutate import KINDS, Mutation, mutations, reverse_edit
from toolgym.code.pool import SandboxPool
from toolgym.code.tools import TOOLS
from toolgym.code.verify import SuiteRun, run_tests
from toolgym.code.workspace import CodeProblem, sha256, stdlib_source
from toolgym.envs.environment import EnvironmentRecord, ToolCall
from toolgym.tasks.model import Difficulty, Task, UserProfile

MODULES = ("colorsys", "fractions", "shlex", "base64", "quopri", "getopt", "netrc", "plistlib", "graphlib",
           "configparser", "filecmp", "mimetypes", "fileinput", "optparse", "string", "csv", "uu", "xdrlib", "pipes",
           "mailcap", "cgi", "wave", "zipapp", "shelve", "codeop", "glob", "cmd")
"""Pure-Python standard-library modules whose `test.test_<module>` runs in well under a second, and which the test
runner does not import itself (so the workspace copy is the one tested)."""

NAMES = ("Alex", "Sam", "Priya", "Jordan", "Mei", "Tomás", "Ngozi", "Lena", "Omar", "Kenji")
VALIDATION_TIMEOUT_S = 20.0


@dataclass
class SynthesisStats:
    """Candidates tried and accepted per mutation kind, accepted per module, and why candidates were rejected."""

    tried: Counter = field(default_factory=Counter)
    accepted: Counter = field(default_factory=Counter)
    modules: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)

    def acceptance(self) -> dict[str, float]:
        return {k: self.accepted[k] / self.tried[k] for k in sorted(self.tried)}


@dataclass(frozen=True)
class Candidate:
    module: str
    mutation: Mutation


def _sites(module: str, seed: int) -> dict[str, list[Mutation]]:
    """The module's candidate mutations by kind, each list in a seeded order (drawn from the end)."""
    rng = random.Random(f"{seed}:{module}")
    by_kind: dict[str, list[Mutation]] = {}
    for m in mutations(stdlib_source(module), seed=rng.getrandbits(32)):
        by_kind.setdefault(m.kind, []).append(m)
    for sites in by_kind.values():
        rng.shuffle(sites)
    return by_kind


def _candidates(modules: tuple[str, ...], seed: int) -> Iterator[Candidate]:
    """Seeded round-robin over modules; each module cycles through the kinds, drawing an unused site of each.
    A module's mutations are enumerated on its first turn, so a short run pays only for the modules it reaches."""
    pools: dict[str, dict[str, list[Mutation]]] = {}
    for turn in itertools.count():
        drawn = False
        for i, module in enumerate(modules):
            if module not in pools:
                pools[module] = _sites(module, seed)
            by_kind = pools[module]
            for k in range(len(KINDS)):
                sites = by_kind.get(KINDS[(turn + i + k) % len(KINDS)])
                if sites:
                    yield Candidate(module, sites.pop())
                    drawn = True
                    break
        if not drawn:
            return


class Validator:
    """Runs candidates' tests in pooled sandboxes, caching each pristine module's results."""

    def __init__(self, pool: SandboxPool):
        self.pool = pool
        self._originals: dict[str, SuiteRun] = {}
        self._lock = threading.Lock()

    def run(self, module: str, text: str | None) -> SuiteRun:
        """The module's tests on `text` (None: the pristine module) in a reset sandbox from the pool."""
        sandbox = self.pool.acquire()
        try:
            files = {f"{module}.py": stdlib_source(module) if text is None else text}
            sandbox.request("put", files=files)
            return run_tests(sandbox, [f"test.test_{module}"], VALIDATION_TIMEOUT_S)
        finally:
            self.pool.release(sandbox)

    def original(self, module: str) -> SuiteRun:
        with self._lock:
            if module not in self._originals:
                self._originals[module] = self.run(module, None)
            return self._originals[module]


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Warning)\b")


def _error_line(text: str) -> str:
    """The exception line of a traceback (e.g. "AssertionError: 3 != 4"), else its last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    exception = next((line for line in lines if _EXCEPTION_LINE.match(line)), None)
    return (exception or (lines[-1] if lines else "an error"))[:240]


def _instruction(module: str, failing: list[str], run: SuiteRun, n_tests: int, rng: random.Random) -> str:
    shown = sorted(rng.sample(failing, min(2, len(failing))))
    examples = "\n".join(f"- `{t.split('.', 2)[-1]}`: {_error_line(run.errors.get(t, ''))}" for t in shown)
    opening = rng.choice([f"Since a recent change, `{module}` misbehaves.",
                          f"Something broke in `{module}`.",
                          f"We have a regression in `{module}`."])
    count = (f"{len(failing)} of its {n_tests} tests fail" if len(failing) > 1 else "one of its tests fails")
    return (f"{opening} {count[0].upper() + count[1:]}, for example:\n{examples}\n\n"
            f"The module is `{module}.py` in the workspace; its tests are the standard library's `test.test_{module}` "
            f"(a copy is in `tests/`; run `python -m unittest test.test_{module}` in the workspace). Please fix the "
            f"bug in `{module}.py` without changing the tests, then submit.")


def _leaks_fix(instruction: str, fix_lines: list[str]) -> bool:
    return any(len(line) >= 8 and line in instruction for line in fix_lines)


def make_task(candidate: Candidate, original: SuiteRun, mutant: SuiteRun, seed: int) -> Task | str:
    """The task of a validated candidate, or the reason it is rejected."""
    module, mutation = candidate.module, candidate.mutation
    suite = f"test.test_{module}"
    if not original.outcomes or original.outcomes.get(suite) == "error":
        return "original does not load"
    if any(v == "timed out" for v in mutant.errors.values()):
        return "mutant times out"
    selected = {t for t, o in original.outcomes.items() if o == "pass"}
    failing = sorted(t for t, o in mutant.outcomes.items() if o != "pass" and (t in selected or t == suite))
    if not failing:
        return "mutant passes every test"
    source = stdlib_source(module)
    buggy = mutation.apply(source)
    forward, fix = reverse_edit(buggy, source), reverse_edit(source, buggy)
    rng = random.Random(f"{seed}:{module}:{mutation.start}:{mutation.kind}")
    instruction = _instruction(module, failing, mutant, len(selected), rng)
    fixed_lines = [line.strip() for line in fix.new.splitlines() if line.strip() not in fix.old]
    if _leaks_fix(instruction, fixed_lines):
        return "instruction shows the fix"
    problem = CodeProblem(module=module, source_sha256=sha256(source), edit={"old": forward.old, "new": forward.new},
                          kind=mutation.kind, function=mutation.function, line=mutation.line,
                          tests=[suite], n_selected=len(selected),
                          excluded=sorted(t for t, o in original.outcomes.items() if o != "pass"), failing=failing)
    task_id = f"code-{module}-{mutation.kind}-{sha256(buggy)[:8]}"
    record = EnvironmentRecord(id=task_id, family="code", domain="code", tools=list(TOOLS),
                               params=problem.model_dump())
    first = buggy[: buggy.index(fix.old)].count("\n") + 1
    gold = [ToolCall(name="read_file", arguments={"path": problem.path, "start_line": max(1, first - 3),
                                                  "end_line": first + fix.old.count("\n") + 3}),
            ToolCall(name="replace_in_file", arguments={"path": problem.path, "old": fix.old, "new": fix.new}),
            ToolCall(name="run_command", arguments={"command": f"python -m unittest {suite}"}),
            ToolCall(name="submit", arguments={"summary": f"Fixed the bug in {mutation.function}."})]
    name = rng.choice(NAMES)
    return Task(id=task_id, domain="code", seed=seed, env=record, instruction=instruction,
                user=UserProfile(name=name, persona=f"a developer whose project depends on {module}",
                                 known={"module": module}),
                gold_chain=gold, expected_changes=[], expected_state_hash="", required_answers=[],
                difficulty=Difficulty(chain_length=len(gold), n_writes=1, n_env_tools=len(TOOLS), n_targets=1))


def synthesize_code_tasks(n: int, seed: int = 0, modules: tuple[str, ...] = MODULES, workers: int = 2,
                          pool: SandboxPool | None = None, on_candidate: Callable[[bool], None] | None = None
                          ) -> tuple[list[Task], SynthesisStats]:
    """Up to `n` validated bug-fix tasks, spread over `modules` and the mutation kinds; `on_candidate(accepted)`
    is called once per candidate judged (for progress bars)."""
    own_pool = pool is None
    pool = pool or SandboxPool(size=workers)
    validator, stats, tasks = Validator(pool), SynthesisStats(), []
    stream = _candidates(modules, seed)
    try:
        with ThreadPoolExecutor(workers) as executor:
            while len(tasks) < n:
                batch = [c for _, c in zip(range(4 * workers), stream)]
                if not batch:
                    break
                runs = list(executor.map(lambda c: (validator.original(c.module),
                                                    validator.run(c.module, c.mutation.apply(stdlib_source(c.module)))),
                                         batch))
                for candidate, (original, mutant) in zip(batch, runs):
                    if len(tasks) == n:
                        break
                    kind = candidate.mutation.kind
                    stats.tried[kind] += 1
                    outcome = make_task(candidate, original, mutant, seed)
                    if isinstance(outcome, Task):
                        tasks.append(outcome)
                        stats.accepted[kind] += 1
                        stats.modules[candidate.module] += 1
                    else:
                        stats.rejected[outcome] += 1
                    if on_candidate:
                        on_candidate(isinstance(outcome, Task))
    finally:
        if own_pool:
            pool.close()
    return tasks, stats

