"""Terminal tools of a code workspace, as OpenAI function schemas: list and search files, read a file or a line range,
write a file, replace an exact string, run a shell command (timeout; output capped and marked when cut), submit.

Arguments are validated with pydantic; every problem (bad arguments, a missing file, an ambiguous replacement, a
sandbox that died) comes back as a ToolResult with ok=False, never as an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from toolgym.code.sandbox import Sandbox, SandboxError
from toolgym.envs.environment import ToolResult

MAX_LIST = 200
MAX_MATCHES = 50
MAX_TIMEOUT_S = 120.0


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListFiles(_Args):
    """List files under a directory of the workspace (recursively), optionally filtered by a glob."""

    path: str = Field(".", description="Directory, relative to the workspace.")
    glob: str = Field("*", description="Shell-style pattern on the relative path, e.g. '*.py'.")
    limit: int = Field(MAX_LIST, ge=1, le=MAX_LIST, description="Most names returned.")


class SearchFiles(_Args):
    """Search files for lines matching a regular expression (like grep -n), with a limit on matches."""

    pattern: str = Field(description="Python regular expression.")
    path: str = Field(".", description="File or directory, relative to the workspace.")
    glob: str = Field("*", description="Only files whose relative path matches this pattern.")
    limit: int = Field(MAX_MATCHES, ge=1, le=MAX_MATCHES, description="Most matching lines returned.")


class ReadFile(_Args):
    """Read a file with line numbers, whole or a line range."""

    path: str = Field(description="File path, relative to the workspace (or absolute).")
    start_line: int | None = Field(None, ge=1, description="First line (1-based), default 1.")
    end_line: int | None = Field(None, ge=1, description="Last line (inclusive), default the last.")


class WriteFile(_Args):
    """Create or overwrite a file in the workspace with the given content."""

    path: str = Field(description="File path, relative to the workspace.")
    content: str = Field(description="The whole new content of the file.")


class ReplaceInFile(_Args):
    """Replace one exact occurrence of a string in a file (it must occur exactly once)."""

    path: str = Field(description="File path, relative to the workspace.")
    old: str = Field(min_length=1, description="Exact text to replace, including whitespace.")
    new: str = Field(description="Replacement text.")


class RunCommand(_Args):
    """Run a bash command in the workspace; output (stdout and stderr) is capped, and the command is killed at
    the timeout."""

    command: str = Field(min_length=1, description="The bash command line.")
    timeout: float = Field(30.0, gt=0, le=MAX_TIMEOUT_S, description="Seconds before the command is killed.")


class Submit(_Args):
    """Submit the workspace as the final solution; no further changes are accepted."""

    summary: str = Field("", description="One or two sentences on what was changed.")


TOOLS: dict[str, type[_Args]] = {"list_files": ListFiles, "search_files": SearchFiles, "read_file": ReadFile,
                                 "write_file": WriteFile, "replace_in_file": ReplaceInFile, "run_command": RunCommand,
                                 "submit": Submit}
WRITES = {"write_file", "replace_in_file", "run_command"}


def openai_tools() -> list[dict[str, Any]]:
    """OpenAI function-calling schemas of the terminal tools."""
    out = []
    for name, model in TOOLS.items():
        schema = model.model_json_schema()
        params = {"type": "object", "properties": {k: {key: v[key] for key in ("type", "description", "default",
                                                                                "anyOf") if key in v}
                                                   for k, v in schema["properties"].items()},
                  "required": schema.get("required", [])}
        out.append({"type": "function", "function": {"name": name, "description": model.__doc__.strip(),
                                                     "parameters": params}})
    return out


def _reply(reply: dict[str, Any], shape: Callable[[dict[str, Any]], Any]) -> ToolResult:
    if not reply.get("ok"):
        return ToolResult(ok=False, error=reply.get("error") or "the tool failed")
    return ToolResult(ok=True, content=shape(reply))


def _run_content(reply: dict[str, Any]) -> dict[str, Any]:
    output = reply["output"]
    if reply["truncated"]:
        output += f"\n[output cut: first {len(output.encode())} of {reply['output_bytes']} bytes shown]"
    if reply["timed_out"]:
        output += "\n[killed at the timeout]"
    return {"exit_code": reply["exit_code"], "timed_out": reply["timed_out"], "output": output}


def call_tool(sandbox: Sandbox, name: str, arguments: dict[str, Any] | None) -> ToolResult:
    """Run one terminal tool in `sandbox` (submit is the caller's business: here it only acknowledges)."""
    if name not in TOOLS:
        return ToolResult(ok=False, error=f"unknown tool {name!r}; tools: {', '.join(TOOLS)}")
    try:
        args = TOOLS[name].model_validate(arguments or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
        return ToolResult(ok=False, error=f"bad arguments for {name}: {problems}")
    limit = sandbox.limits.max_output
    try:
        if isinstance(args, ListFiles):
            return _reply(sandbox.request("list", path=args.path, glob=args.glob, limit=args.limit),
                          lambda r: {"files": r["files"], "total": r["total"], "truncated": r["truncated"]})
        if isinstance(args, SearchFiles):
            return _reply(sandbox.request("search", pattern=args.pattern, path=args.path, glob=args.glob,
                                          limit=args.limit),
                          lambda r: {"matches": r["matches"], "truncated": r["truncated"]})
        if isinstance(args, ReadFile):
            return _reply(sandbox.request("read", path=args.path, start=args.start_line, end=args.end_line,
                                          max_output=limit),
                          lambda r: {k: r[k] for k in ("path", "start", "end", "lines", "text", "truncated")})
        if isinstance(args, WriteFile):
            return _reply(sandbox.request("write", path=args.path, content=args.content),
                          lambda r: {"path": r["path"], "bytes": r["bytes"]})
        if isinstance(args, ReplaceInFile):
            return _reply(sandbox.request("replace", path=args.path, old=args.old, new=args.new),
                          lambda r: {"path": r["path"], "replaced": r["replaced"]})
        if isinstance(args, RunCommand):
            return _reply(sandbox.run(args.command, timeout=args.timeout), _run_content)
        return ToolResult(ok=True, content={"submitted": True, "summary": args.summary})
    except SandboxError as exc:
        return ToolResult(ok=False, error=f"the workspace is unavailable: {exc}")
