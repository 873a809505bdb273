"""Bug-fix tasks from the standard library: mutations, synthesis, verification, and episodes through the registry."""

from __future__ import annotations

import itertools
import textwrap

import pytest

from toolgym.code.mutate import mutations, reverse_edit
from toolgym.code.tasks import _candidates, synthesize_code_tasks
from toolgym.code.workspace import CodeEnvironment, CodeProblem
from toolgym.envs.environment import ToolCall
from toolgym.envs.families import open_env, replay, verify_episode
from toolgym.eval.runner import evaluate
from toolgym.policy.scripted import GoldPolicy

SOURCE = textwrap.dedent('''\
    """Doc."""
    def clamp(x, low, high):
        """Keep x in range."""
        if x < low:
            return low
        if x > high:
            x = high
        return min(x, high) if ok and not done else "Hi"
''')


def _mutants(kind: str) -> set[str]:
    return {m.apply(SOURCE) for m in mutations(SOURCE) if m.kind == kind}


def test_each_mutation_kind_makes_the_expected_small_edit():
    assert SOURCE.replace("x < low", "x <= low") in _mutants("flip_comparison")
    assert SOURCE.replace("ok and not", "ok or not") in _mutants("flip_boolean")
    assert SOURCE.replace("not done", "done") in _mutants("flip_boolean")
    assert SOURCE.replace("    if x < low:\n        return low\n", "") in _mutants("remove_early_return")
    assert SOURCE.replace("    if x > high:\n        x = high\n", "") in _mutants("remove_branch")
    assert SOURCE.replace("min(x, high)", "min(high, x)") in _mutants("swap_arguments")
    assert SOURCE.replace('"Hi"', "'hI'") in _mutants("wrong_constant")
    assert "Keep x in range" in "".join(_mutants("wrong_constant"))  # the docstring itself is never mutated
    numbers = "def f(a):\n    return a[1:] + 0\n"
    assert {m.apply(numbers) for m in mutations(numbers) if m.kind == "off_by_one"} <= {
        "def f(a):\n    return a[2:] + 0\n", "def f(a):\n    return a[0:] + 0\n", "def f(a):\n    return a[1:] + 1\n"}


def test_reverse_edit_is_an_exact_unique_replacement():
    source = "a = 1\nb = 2\na = 1\nc = 3\n"
    mutant = "a = 1\nb = 2\na = 2\nc = 3\n"
    edit = reverse_edit(source, mutant)
    assert mutant.count(edit.old) == 1 and mutant.replace(edit.old, edit.new) == source
    deleted = "a = 1\nb = 2\nc = 3\n"
    back = reverse_edit(source, deleted)
    assert deleted.count(back.old) == 1 and deleted.replace(back.old, back.new) == source


def test_candidates_are_seeded():
    first = [(c.module, c.mutation) for c in itertools.islice(_candidates(("getopt", "shlex"), 5), 30)]
    again = [(c.module, c.mutation) for c in itertools.islice(_candidates(("getopt", "shlex"), 5), 30)]
    other = [(c.module, c.mutation) for c in itertools.islice(_candidates(("getopt", "shlex"), 6), 30)]
    assert first == again and first != other
    assert {m for m, _ in first} == {"getopt", "shlex"} and len({m.kind for _, m in first}) >= 5


@pytest.fixture(scope="module")
def code_tasks():
    tasks, stats = synthesize_code_tasks(4, seed=3, modules=("shlex", "getopt", "colorsys", "graphlib"))
    return tasks, stats


def test_synthesis_validates_and_writes_issue_like_instructions(code_tasks):
    tasks, stats = code_tasks
    assert len(tasks) == 4 and {t.env.params["module"] for t in tasks} == {"shlex", "getopt", "colorsys", "graphlib"}
    assert sum(stats.accepted.values()) == 4 and sum(stats.tried.values()) >= 4
    for t in tasks:
        problem = CodeProblem.model_validate(t.env.params)
        fix = t.gold_chain[1].arguments
        assert problem.failing and problem.n_selected > len(problem.failing) - 1
        assert f"`{problem.module}.py`" in t.instruction and "fail" in t.instruction
        restored = [line.strip() for line in fix["new"].splitlines() if line not in fix["old"].splitlines()]
        assert not any(line and line in t.instruction for line in restored)


def test_same_seed_same_tasks():
    a, _ = synthesize_code_tasks(2, seed=11, modules=("getopt",))
    b, _ = synthesize_code_tasks(2, seed=11, modules=("getopt",))
    assert [t.model_dump() for t in a] == [t.model_dump() for t in b]


def test_gold_policy_solves_every_task_through_evaluate(code_tasks):
    tasks, _ = code_tasks
    run = evaluate(GoldPolicy.from_tasks(tasks), tasks, k=1)
    assert [t.passed for t in run.trajectories] == [True] * len(tasks)
    assert [t.progress for t in run.trajectories] == [1.0] * len(tasks)
    assert all(t.termination == "answer" for t in run.trajectories)


def test_read_only_policy_solves_none(code_tasks):
    tasks, _ = code_tasks
    plans = {t.instruction: ([c for c in t.gold_chain if c.name != "replace_in_file"], "Looked into it.")
             for t in tasks}
    run = evaluate(GoldPolicy(plans), tasks, k=1)
    assert [t.passed for t in run.trajectories] == [False] * len(tasks)
    assert [t.progress for t in run.trajectories] == [0.0] * len(tasks), "reading alone earns no progress"


def test_verdict_judges_final_files_with_progress_and_outside_changes(code_tasks):
    task = code_tasks[0][0]
    problem = CodeProblem.model_validate(task.env.params)
    fix = task.gold_chain[1]
    gold = replay(task, [fix])
    assert gold.passed and gold.progress == 1.0 and gold.diff.startswith(f"--- a/{problem.path}")
    assert gold.explain().startswith("passed\ntests: ") and gold.diff in gold.explain()  # what report pages show
    untouched = replay(task, [])
    assert not untouched.passed and untouched.progress == 0.0 and untouched.problems
    tampered = replay(task, [fix, ToolCall(name="write_file", arguments={"path": problem.test_path, "content": ""})])
    assert not tampered.passed and f"changed outside {problem.path}: {problem.test_path}" in tampered.problems
    scratch = replay(task, [fix, ToolCall(name="write_file", arguments={"path": "repro.py", "content": "print(1)"})])
    assert scratch.passed  # new scratch files are not carried into verification
    by_shell = ToolCall(name="run_command", arguments={"command": f"cp /dev/null {problem.path}"})
    assert replay(task, [by_shell]).progress == 0.0


def test_submit_freezes_the_workspace(code_tasks):
    task = code_tasks[0][0]
    env = open_env(task.env)
    try:
        assert isinstance(env, CodeEnvironment) and not hasattr(env, "env")
        assert env.call("submit", {"summary": "nothing"}).ok
        late = env.call(task.gold_chain[1].name, task.gold_chain[1].arguments)
        assert not late.ok and "submitted" in late.error
        assert env.call("read_file", {"path": "tests"}).ok is False  # reads still answer (a directory: an error)
        assert not verify_episode(task, env, "").passed
    finally:
        env.close()


def test_a_task_from_another_python_is_refused(code_tasks):
    record = code_tasks[0][0].env.model_copy(deep=True)
    record.params["source_sha256"] = "0" * 64
    with pytest.raises(ValueError, match="differs from the one the task was made from"):
        open_env(record)
