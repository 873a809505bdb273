"""Serve any toolgym environment over the Model Context Protocol (official `mcp` SDK), so MCP clients and RL
libraries that consume MCP tools can act in it: over stdio, or streamable HTTP on 127.0.0.1 with an optional bearer
token.

One server holds one environment, opened through the family registry (`open_env`), so tool-use domains, code
sandboxes and search corpora are served alike. `tools/list` gives the environment's tools; `tools/call` runs
`env.call` and a failed call comes back as a tool error (`isError`), never as a protocol error. When the server was
given a task, `toolgym_verify` returns the task's verdict on the current state and an answer; `toolgym_reset` gives
every client a fresh environment again. Every client session of an HTTP server acts on the same environment.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from pydantic import ValidationError

from toolgym.envs.environment import EnvironmentRecord
from toolgym.envs.families import family, open_env, verify_episode
from toolgym.tasks.model import Task

VERIFY_TOOL = "toolgym_verify"
RESET_TOOL = "toolgym_reset"


def load_target(source: str, target_id: str | None = None) -> tuple[EnvironmentRecord, Task | None]:
    """The environment record (and task, if `source` holds tasks) to serve: `source` is one JSON line (a task or an
    environment record, as `tasks synth` and `envs sample` write them) or a JSONL file of them; `target_id` picks a
    line by id, else the first line is served. Raises ValueError with a readable message."""
    if source.lstrip().startswith("{"):
        lines, origin = [source], "the given JSON"
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{source}: no such file (give a JSONL file of tasks or environment records, or one "
                             "JSON line)")
        lines, origin = [line for line in path.read_text().splitlines() if line.strip()], source
    for lineno, line in enumerate(lines, 1):
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{origin}:{lineno}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{origin}:{lineno}: expected a JSON object, got {type(data).__name__}")
        try:
            task = Task.model_validate(data) if "instruction" in data else None
            record = task.env if task else EnvironmentRecord.model_validate(data)
        except ValidationError as exc:
            kind = "task" if "instruction" in data else "environment record"
            raise ValueError(f"{origin}:{lineno}: not a valid {kind}: {exc}") from None
        if target_id is None or target_id in {record.id, task.id if task else None}:
            return record, task
    if target_id is None:
        raise ValueError(f"{origin}: no task or environment record in it")
    raise ValueError(f"{origin}: no task or environment record with id {target_id!r}")


class EnvironmentSession:
    """The one environment a server acts on, with the task that judges it (if any)."""

    def __init__(self, record: EnvironmentRecord, task: Task | None = None):
        self.record, self.task = record, task
        self.env = open_env(record)
        names = {tool["function"]["name"] for tool in self.env.openai_tools()}
        clash = names & {VERIFY_TOOL, RESET_TOOL}
        if clash:
            raise ValueError(f"environment {record.id} has tools named like toolgym's own: {sorted(clash)}")

    def tools(self) -> list[types.Tool]:
        """The environment's tools as MCP tools, then toolgym's own verify (with a task) and reset tools."""
        tools = [types.Tool(name=f["name"], description=f.get("description"),
                            input_schema=f.get("parameters") or {"type": "object", "properties": {}})
                 for f in (tool["function"] for tool in self.env.openai_tools())]
        if self.task is not None:
            tools.append(types.Tool(
                name=VERIFY_TOOL, description="Judge the task on the environment's current state and your final "
                "answer to the user; returns the verdict (passed, state problems, facts the answer lacks).",
                input_schema={"type": "object", "properties": {"answer": {"type": "string"}}, "required": []},
                annotations=types.ToolAnnotations(read_only_hint=True)))
        tools.append(types.Tool(name=RESET_TOOL, description="Discard every change: a fresh environment.",
                                input_schema={"type": "object", "properties": {}}))
        return tools

    def call(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Run one tool: the environment's own through `env.call` (its errors as tool errors), or toolgym's."""
        if name == VERIFY_TOOL and self.task is not None:
            answer = arguments.get("answer", "")
            if not isinstance(answer, str):
                return _error("toolgym_verify takes a string 'answer'")
            verdict = verify_episode(self.task, self.env, answer)
            return types.CallToolResult(content=[types.TextContent(text=verdict.explain())],
                                        structured_content=verdict.model_dump(exclude_none=True))
        if name == RESET_TOOL:
            self.reset()
            return types.CallToolResult(content=[types.TextContent(text="environment reset")])
        result = self.env.call(name, arguments)
        return types.CallToolResult(content=[types.TextContent(text=result.text())], is_error=not result.ok)

    def reset(self) -> None:
        """Replace the environment with a fresh one from its record."""
        self.env.close()
        self.env = open_env(self.record)

    def close(self) -> None:
        self.env.close()


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=json.dumps({"error": message}))], is_error=True)


def build_server(session: EnvironmentSession) -> Server:
    """A low-level MCP server whose tools are the session's; the task's instruction is its `instructions`."""

    async def list_tools(ctx: ServerRequestContext, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=session.tools())

    async def call_tool(ctx: ServerRequestContext, params: types.CallToolRequestParams) -> types.CallToolResult:
        return session.call(params.name, params.arguments or {})

    title = family(session.record.family).title(session.env)
    return Server(f"toolgym-{session.record.id}", title=title,
                  instructions=session.task.instruction if session.task else None,
                  on_list_tools=list_tools, on_call_tool=call_tool)


def check_token(token: str) -> str:
    """`token` if it can guard a server; an empty or blank token would let anyone in, so it is refused."""
    if not token.strip():
        raise ValueError("the token must not be empty (leave it out to serve without auth)")
    return token


class StaticTokenVerifier:
    """Accepts exactly one bearer token (compared in constant time)."""

    def __init__(self, token: str):
        self.token = check_token(token)

    async def verify_token(self, token: str) -> AccessToken | None:
        if secrets.compare_digest(token.encode(), self.token.encode()):
            return AccessToken(token=token, client_id="toolgym", scopes=[])
        return None


def http_app(server: Server, host: str = "127.0.0.1", port: int = 8000, token: str | None = None):
    """The streamable-HTTP ASGI app at /mcp; with a token, requests without 'Authorization: Bearer TOKEN' get 401."""
    if token is None:
        return server.streamable_http_app(host=host)
    verifier = StaticTokenVerifier(token)
    auth = AuthSettings(issuer_url=f"http://{host}:{port}", resource_server_url=None)
    return server.streamable_http_app(host=host, auth=auth, token_verifier=verifier)


def serve_stdio(session: EnvironmentSession) -> None:
    """Serve the session over this process's stdin/stdout until the client closes it."""
    import anyio
    from mcp.server.stdio import stdio_server

    server = build_server(session)

    async def run() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(run)


def serve_http(session: EnvironmentSession, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
               log_level: str = "warning") -> None:
    """Serve the session over streamable HTTP at http://HOST:PORT/mcp until interrupted."""
    import uvicorn

    uvicorn.run(http_app(build_server(session), host, port, token), host=host, port=port, log_level=log_level)
