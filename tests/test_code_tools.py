"""Terminal tools of code workspaces: schemas, behaviour, and errors that come back as results."""

from __future__ import annotations

import pytest

from toolgym.code.sandbox import Sandbox, SandboxLimits
from toolgym.code.tools import call_tool, openai_tools


@pytest.fixture(scope="module")
def sandbox():
    sb = Sandbox.start(SandboxLimits(max_output=500))
    sb.request("put", files={"pkg/a.py": "alpha = 1\nbeta = 2\nalpha_beta = 3\n", "pkg/b.txt": "alpha\n",
                             "notes.md": "x\n" * 5})
    yield sb
    sb.close()


def test_schemas_are_openai_functions_with_required_parameters():
    tools = {t["function"]["name"]: t["function"] for t in openai_tools()}
    assert set(tools) == {"list_files", "search_files", "read_file", "write_file", "replace_in_file", "run_command",
                          "submit"}
    assert tools["replace_in_file"]["parameters"]["required"] == ["path", "old", "new"]
    assert tools["run_command"]["parameters"]["properties"]["timeout"]["default"] == 30.0
    assert all(t["parameters"]["type"] == "object" and t["description"] for t in tools.values())


def test_list_and_search_files_with_limits(sandbox):
    listed = call_tool(sandbox, "list_files", {"glob": "pkg/*"}).content
    assert listed == {"files": ["pkg/a.py", "pkg/b.txt"], "total": 2, "truncated": False}
    capped = call_tool(sandbox, "list_files", {"limit": 1}).content
    assert capped["total"] == 3 and len(capped["files"]) == 1 and capped["truncated"]
    found = call_tool(sandbox, "search_files", {"pattern": r"^alpha\b", "path": "pkg"}).content
    assert found == {"matches": ["pkg/a.py:1: alpha = 1", "pkg/b.txt:1: alpha"], "truncated": False}
    assert call_tool(sandbox, "search_files", {"pattern": "alpha", "limit": 2}).content["truncated"]
    bad = call_tool(sandbox, "search_files", {"pattern": "(unclosed"})
    assert not bad.ok and "bad regular expression" in bad.error


def test_read_a_line_range_write_and_replace(sandbox):
    part = call_tool(sandbox, "read_file", {"path": "pkg/a.py", "start_line": 2, "end_line": 3}).content
    assert part["text"] == "2\tbeta = 2\n3\talpha_beta = 3" and part["lines"] == 3
    assert call_tool(sandbox, "write_file", {"path": "new/c.py", "content": "gamma = 3\n"}).ok
    assert call_tool(sandbox, "read_file", {"path": "new/c.py"}).content["text"] == "1\tgamma = 3"
    twice = call_tool(sandbox, "replace_in_file", {"path": "pkg/a.py", "old": "alpha", "new": "omega"})
    assert not twice.ok and "occurs 2 times" in twice.error
    once = call_tool(sandbox, "replace_in_file", {"path": "pkg/a.py", "old": "beta = 2", "new": "beta = 20"})
    assert once.ok
    assert "beta = 20" in call_tool(sandbox, "read_file", {"path": "pkg/a.py"}).content["text"]
    missing = call_tool(sandbox, "read_file", {"path": "nope.py"})
    assert not missing.ok and "No such file" in missing.error


def test_run_command_caps_output_and_kills_at_timeout(sandbox):
    ok = call_tool(sandbox, "run_command", {"command": "echo hello; exit 3"}).content
    assert ok == {"exit_code": 3, "timed_out": False, "output": "hello\n"}
    long = call_tool(sandbox, "run_command", {"command": "seq 1 100000"}).content
    assert long["output"].startswith("1\n2\n3\n") and "[output cut: first 500 of 588895 bytes shown]" in long["output"]
    slow = call_tool(sandbox, "run_command", {"command": "sleep 5", "timeout": 0.5}).content
    assert slow["timed_out"] and slow["exit_code"] is None and "[killed at the timeout]" in slow["output"]


def test_errors_come_back_as_results_never_raised(sandbox):
    assert "unknown tool" in call_tool(sandbox, "rm_rf", {}).error
    bad = call_tool(sandbox, "run_command", {"command": "ls", "timeout": 10_000})
    assert not bad.ok and "bad arguments for run_command: timeout" in bad.error
    extra = call_tool(sandbox, "read_file", {"path": "pkg/a.py", "mode": "rb"})
    assert not extra.ok and "mode" in extra.error
    dead = Sandbox.start()
    dead.close()
    result = call_tool(dead, "list_files", {})
    assert not result.ok and "workspace is unavailable" in result.error
