"""MCP servers for environments, driven by the official MCP client: in process, over stdio (the CLI as a subprocess)
and over streamable HTTP with a bearer token. Tool results and database changes must equal those of `env.call`."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from typer.testing import CliRunner

from toolgym.cli import app
from toolgym.domains import load_domain
from toolgym.envs.environment import ToolCall
from toolgym.envs.families import open_env, verify_episode
from toolgym.envs.mcp import RESET_TOOL, VERIFY_TOOL, EnvironmentSession, build_server, load_target
from toolgym.envs.sample import EnvironmentSampler
from toolgym.jsonl import write_jsonl
from toolgym.tasks.model import Task
from toolgym.tasks.synthesize import synthesize_task
from toolgym.tasks.verify import gold_answer

BAD_CALLS = [ToolCall(name="no_such_tool", arguments={}), ToolCall(name="deposit", arguments={"amount": "lots"})]


@pytest.fixture(scope="module")
def task() -> Task:
    """A bank task whose gold chain reads, then writes."""
    domain = load_domain("bank")
    for i, env in enumerate(EnvironmentSampler(domain, seed=3).sample_many(8)):
        candidate = synthesize_task(env, i)
        writes = [domain.tools[c.name].writes for c in candidate.gold_chain]
        if len(writes) >= 2 and not writes[0] and writes[-1] and "deposit" in env.tool_names:
            return candidate
    raise AssertionError("no read-then-write bank task among the samples")


@pytest.fixture(scope="module")
def tasks_file(task, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mcp") / "tasks.jsonl"
    write_jsonl(path, [task])
    return path


def through_env_call(task: Task, calls: list[ToolCall]) -> tuple[list[tuple[str, bool]], str]:
    """What the same calls give through `env.call` on a fresh environment: (text, ok) per call, final state hash."""
    env = open_env(task.env)
    try:
        results = [env.call(c.name, c.arguments) for c in calls]
        return [(r.text(), r.ok) for r in results], env.state_hash()
    finally:
        env.close()


async def act(client: Client, calls: list[ToolCall]) -> list[tuple[str, bool]]:
    results = [await client.call_tool(c.name, c.arguments) for c in calls]
    return [(r.content[0].text, not r.is_error) for r in results]


async def round_trip(client: Client, task: Task) -> dict:
    """List tools, check the verdict fails before acting, run the gold chain and two bad calls, verify again."""
    tools = [t.name for t in (await client.list_tools()).tools]
    before = await client.call_tool(VERIFY_TOOL, {"answer": gold_answer(task)})
    results = await act(client, [*task.gold_chain, *BAD_CALLS])
    after = await client.call_tool(VERIFY_TOOL, {"answer": gold_answer(task)})
    return {"tools": tools, "before": before.structured_content, "results": results, "after": after.structured_content}


def check_round_trip(seen: dict, task: Task) -> None:
    env_tools = sorted(task.env.tools)
    assert seen["tools"] == [*env_tools, VERIFY_TOOL, RESET_TOOL]
    assert seen["before"]["passed"] is False and seen["before"]["problems"]
    expected, _ = through_env_call(task, [*task.gold_chain, *BAD_CALLS])
    assert seen["results"] == expected
    assert all(ok for _, ok in seen["results"][: len(task.gold_chain)])
    assert [ok for _, ok in seen["results"][len(task.gold_chain):]] == [False, False]
    assert "unknown tool 'no_such_tool'" in seen["results"][-2][0]
    assert seen["after"] == {"passed": True, "state_ok": True, "answers_ok": True, "problems": [],
                             "missing_answers": []}


def test_in_process_server_changes_the_database_exactly_as_env_call(task):
    session = EnvironmentSession(task.env, task)
    calls = [*task.gold_chain, *BAD_CALLS]

    async def main():
        async with Client(build_server(session)) as client:
            seen = await round_trip(client, task)
            hash_after_episode = session.env.state_hash()
            reset = await client.call_tool(RESET_TOOL, {})
            return seen, hash_after_episode, reset.is_error

    seen, hash_after_episode, reset_failed = anyio.run(main)
    check_round_trip(seen, task)
    _, expected_hash = through_env_call(task, calls)
    assert hash_after_episode == expected_hash
    assert not reset_failed and session.env.state_hash() == through_env_call(task, [])[1] != expected_hash
    assert not verify_episode(task, session.env, gold_answer(task)).passed
    session.close()


def test_environment_record_alone_serves_no_verify_tool(task):
    record, served_task = load_target(task.env.model_dump_json())
    assert served_task is None and record == task.env
    session = EnvironmentSession(record)

    async def main():
        async with Client(build_server(session)) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            verify = await client.call_tool(VERIFY_TOOL, {"answer": ""})
            return names, verify

    names, verify = anyio.run(main)
    session.close()
    assert VERIFY_TOOL not in names and RESET_TOOL in names
    assert verify.is_error and "unknown tool" in verify.content[0].text


def test_stdio_round_trip_through_the_cli(task, tasks_file):
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "toolgym.cli", "envs", "serve-mcp", str(tasks_file), "--id", task.id])

    async def main():
        async with Client(params) as client:
            return await round_trip(client, task)

    check_round_trip(anyio.run(main), task)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(tasks_file):
    """The CLI serving the task over streamable HTTP on a free port, token 's3cret'; yields the endpoint URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "toolgym.cli", "envs", "serve-mcp", str(tasks_file), "--transport",
                             "http", "--port", str(port), "--token", "s3cret"], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_http_round_trip_with_a_bearer_token(task, http_server):
    hello = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Accept": "application/json, text/event-stream"}
    assert httpx.post(http_server, json=hello, headers=headers).status_code == 401
    wrong = httpx.post(http_server, json=hello, headers={**headers, "Authorization": "Bearer nope"})
    assert wrong.status_code == 401

    async def main():
        async with httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret"}) as http:
            async with Client(streamable_http_client(http_server, http_client=http)) as client:
                return await round_trip(client, task)

    check_round_trip(anyio.run(main), task)


def test_cli_refuses_bad_input_with_clear_messages(task, tasks_file, tmp_path):
    runner = CliRunner(env={"COLUMNS": "300"})
    empty = runner.invoke(app, ["envs", "serve-mcp", str(tasks_file), "--transport", "http", "--token", " "])
    assert empty.exit_code != 0 and "token must not be empty" in empty.output
    missing = runner.invoke(app, ["envs", "serve-mcp", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 1 and "no such file" in missing.output
    unknown = runner.invoke(app, ["envs", "serve-mcp", str(tasks_file), "--id", "nope"])
    assert unknown.exit_code == 1 and "no task or environment record with id 'nope'" in unknown.output
    nowhere = runner.invoke(app, ["envs", "serve-mcp", '{"id": "e", "domain": "nope", "tools": ["x"]}'])
    assert nowhere.exit_code == 1 and "unknown domain 'nope'" in nowhere.output
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "x", "instruction": "hi"}\n')
    bad = runner.invoke(app, ["envs", "serve-mcp", str(broken)])
    assert bad.exit_code == 1 and "not a valid task" in bad.output
