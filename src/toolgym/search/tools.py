"""The search environment an agent acts in: `search(query, k)`, `open(page, part)` and `find(page, text)` over one
corpus, as OpenAI function schemas returning ToolResult (bad calls come back as error results, never raised).
It remembers which pages' text was read (open or find), so verification can ask whether the answer was read rather
than guessed."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from toolgym.envs.environment import ToolResult
from toolgym.search.corpus import Corpus


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchArgs(_Args):
    query: str = Field(..., min_length=1, max_length=500, description="Words to look for in page titles and text.")
    k: int = Field(5, ge=1, le=20, description="How many pages to return (best first).")


class OpenArgs(_Args):
    page: str = Field(..., max_length=32, description="Page id, e.g. p00042.")
    part: int = Field(1, ge=1, description="Which part of a long page to read, from 1.")


class FindArgs(_Args):
    page: str = Field(..., max_length=32, description="Page id, e.g. p00042.")
    text: str = Field(..., min_length=1, max_length=200, description="Text to look for (case-insensitive).")


TOOLS: dict[str, tuple[type[_Args], str]] = {
    "search": (SearchArgs, "Full-text search over the knowledge base; returns page ids, titles and snippets."),
    "open": (OpenArgs, "Read one part of a page; long pages come in several parts."),
    "find": (FindArgs, "List the lines of a page that contain some text, with the part each is in."),
}


def tool_schema(name: str) -> dict[str, Any]:
    """One tool as an OpenAI function-calling schema."""
    model, description = TOOLS[name]
    schema = model.model_json_schema()
    properties = {k: {key: v for key, v in p.items() if key != "title"} for k, p in schema["properties"].items()}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": schema.get("required", []),
        "additionalProperties": False}}}


class SearchEnvironment:
    """One episode's view of a corpus: the three reading tools and the set of pages read so far."""

    def __init__(self, corpus: Corpus, title: str, answer_page: str | None = None):
        self.corpus = corpus
        self.title = title
        self.answer_page = answer_page
        self.read_pages: set[str] = set()

    def openai_tools(self) -> list[dict[str, Any]]:
        return [tool_schema(name) for name in TOOLS]

    def call(self, name: str, arguments: Any = None) -> ToolResult:
        """Run a tool; unknown tools, bad arguments and missing pages come back as error results."""
        if name not in TOOLS:
            return ToolResult(ok=False, error=f"unknown tool '{name}'. Available tools: {', '.join(TOOLS)}")
        try:
            args = TOOLS[name][0].model_validate(arguments or {})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
            return ToolResult(ok=False, error=f"bad arguments for {name}: {problems}")
        if isinstance(args, SearchArgs):
            return ToolResult(ok=True, content={"results": self.corpus.search(args.query, args.k)})
        info = self.corpus.page(args.page)
        if info is None:
            return ToolResult(ok=False, error=f"no page '{args.page}'; page ids come from search results and links")
        title, n_parts = info
        if isinstance(args, OpenArgs):
            if args.part > n_parts:
                return ToolResult(ok=False, error=f"page {args.page} has {n_parts} part(s); asked for part {args.part}")
            self.read_pages.add(args.page)
            return ToolResult(ok=True, content={"page": args.page, "title": title, "part": args.part,
                                                "parts": n_parts, "text": self.corpus.part(args.page, args.part)})
        self.read_pages.add(args.page)
        needle = args.text.lower()
        hits = [{"part": p, "line": line} for p in range(1, n_parts + 1)
                for line in (self.corpus.part(args.page, p) or "").splitlines() if needle in line.lower()]
        return ToolResult(ok=True, content={"page": args.page, "title": title, "matches": hits[:20]})

    def close(self) -> None:
        """Nothing to release: the corpus is shared read-only between episodes."""
