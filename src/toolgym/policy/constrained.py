"""Constrained decoding of tool calls: inside `<tool_call>...</tool_call>` the sampler may only pick tokens that keep
the text a valid call of one of the request's tools, as vLLM's and SGLang's structured outputs do.

A call is the one-line JSON `{"name":"NAME","arguments":{"KEY":VALUE,...}}` (a space is allowed after `:` and `,`).
Modes:
- `schema`: NAME is one of the tools; KEY one of its parameters, each at most once, every required one before the
  object closes; an enumerated VALUE is one of its values (quoted if they are strings, bare if numbers or booleans), a boolean `true`/`false`, an integer or number a JSON
  number, a string any JSON string without escapes.
- `copy`: `schema`, and every string VALUE must occur verbatim in the conversation (user and tool messages) and every
  number must equal a number written there; outside calls, text the model puts in double quotes is a quotation and
  must occur verbatim there too (answers quote the facts they report). For a model that selects well but copies
  badly (the tiny default trained on a CPU), this turns copying into choosing where to start and stop.
- `none`: no constraint.

Token-level masks come from walking a character trie of the vocabulary alongside the grammar's character automaton,
so each step costs the grammar's branching, not the vocabulary size. Only the sampling distribution is masked: the
logprobs a policy records stay the model's own, which is what the trainer recomputes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

ConstraintMode = Literal["none", "schema", "copy"]
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
_JSON_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?")
_SEP = "\x00"


class State:
    """A point in the call grammar; `step(ch)` is the state after one more character, or None if it is not allowed."""

    def step(self, ch: str) -> State | None:
        raise NotImplementedError


@dataclass(frozen=True)
class Done(State):
    """The JSON is complete: only the closing `</tool_call>` token may follow."""

    def step(self, ch: str) -> State | None:
        return None


@dataclass(frozen=True)
class Lit(State):
    """The fixed text `text[i:]`, then `then()`."""

    text: str
    then: Callable[[], State]
    i: int = 0

    def step(self, ch: str) -> State | None:
        if ch != self.text[self.i]:
            return None
        return self.then() if self.i + 1 == len(self.text) else Lit(self.text, self.then, self.i + 1)


@dataclass(frozen=True)
class Space(State):
    """An optional single space before `then`."""

    then: State

    def step(self, ch: str) -> State | None:
        return self.then if ch == " " else self.then.step(ch)


@dataclass(frozen=True)
class Choice(State):
    """One of `options` (inside quotes, so the closing `"` ends it unambiguously), then `then(choice)`."""

    options: tuple[str, ...]
    then: Callable[[str], State]
    prefix: str = ""

    def step(self, ch: str) -> State | None:
        if ch == '"':
            return self.then(self.prefix) if self.prefix in self.options else None
        grown = self.prefix + ch
        return Choice(self.options, self.then, grown) if any(o.startswith(grown) for o in self.options) else None


@dataclass(frozen=True)
class Bare(State):
    """An unquoted token (a number or true/false): each prefix must pass `prefix_ok`, and any character outside
    `chars` ends it once the token so far is `complete`."""

    chars: str
    prefix_ok: Callable[[str], bool]
    complete: Callable[[str], bool]
    then: Callable[[], State]
    prefix: str = ""

    def step(self, ch: str) -> State | None:
        if ch in self.chars:
            grown = self.prefix + ch
            return Bare(self.chars, self.prefix_ok, self.complete, self.then, grown) if self.prefix_ok(grown) else None
        return self.then().step(ch) if self.prefix and self.complete(self.prefix) else None


class Spans:
    """The text a copied value may come from: a value starts where a word may start (the text's start, or after
    a space, quote, bracket, colon, comma or semicolon) and ends where one may end (before a space, quote, bracket,
    comma, semicolon, ?, !, or a period or colon that ends the sentence or clause), so `C` of `Could` or `N0187` of
    `DN0187` is not a value."""

    def __init__(self, text: str):
        self.text = text
        starts: dict[str, list[int]] = {}
        for i, ch in enumerate(text):
            if i == 0 or text[i - 1].isspace() or text[i - 1] in "\"'([{:,;" + _SEP:
                starts.setdefault(ch, []).append(i)
        self.starts = {ch: tuple(found) for ch, found in starts.items()}
        n = len(text)
        self.ends = frozenset(j for j in range(1, n + 1) if j == n or text[j].isspace() or text[j] in "\"')]},;?!" + _SEP
                              or (text[j] in ".:" and (j + 1 == n or text[j + 1].isspace() or text[j + 1] == _SEP)))


@dataclass(frozen=True)
class Text(State):
    """A JSON string body without escapes; with `spans`, a whole span of their text (positions: where the value so
    far occurs, `size` characters long)."""

    then: Callable[[], State]
    spans: Spans | None = None
    prefix: str = ""
    positions: tuple[int, ...] = ()

    def step(self, ch: str) -> State | None:
        size = len(self.prefix)
        if ch == '"':
            if not self.prefix:
                return None
            if self.spans is not None and not any(i + size in self.spans.ends for i in self.positions):
                return None
            return self.then()
        if ch == "\\" or ch < " " or ch == _SEP:
            return None
        if self.spans is None:
            return Text(self.then, None, self.prefix + ch)
        text = self.spans.text
        found = (self.spans.starts.get(ch, ()) if not size else
                 tuple(i for i in self.positions if i + size < len(text) and text[i + size] == ch))
        return Text(self.then, self.spans, self.prefix + ch, found) if found else None


@dataclass(frozen=True)
class Prose(State):
    """Text outside a tool call in copy mode: free, except that a double-quoted span must quote the conversation."""

    spans: Spans

    def step(self, ch: str) -> State | None:
        return Text(lambda: self, self.spans) if ch == '"' else self


@dataclass
class CallGrammar:
    """The grammar of one request: its tools' schemas and, in copy mode, the conversation's text and numbers."""

    tools: dict[str, dict[str, Any]]
    mode: ConstraintMode = "schema"
    texts: Spans | None = None
    numbers: str | None = None
    integers: str | None = None
    _names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self._names = tuple(sorted(self.tools))

    @classmethod
    def for_request(cls, tools: list[dict[str, Any]], messages: list[dict[str, Any]], mode: ConstraintMode
                    ) -> CallGrammar | None:
        """The grammar of a request, or None when it has no tools (nothing to constrain)."""
        schemas = {}
        for tool in tools:
            fn = tool.get("function", tool)
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                schemas[fn["name"]] = fn.get("parameters") or {}
        if not schemas or mode == "none":
            return None
        if mode == "schema":
            return cls(schemas, mode)
        sources = [m["content"] for m in messages if m.get("role") in ("user", "tool") and isinstance(m.get("content"), str)]
        return cls(schemas, mode, Spans(_SEP.join(sources)), _number_source(sources),
                   _number_source(sources, integers=True))

    def prose(self) -> State | None:
        """The state of text outside calls: constrained quotations in copy mode, else free (None)."""
        return Prose(self.texts) if self.texts is not None else None

    def start(self) -> State:
        """The state right after `<tool_call>`."""
        return Lit('{"name":', lambda: Space(Lit('"', lambda: Choice(self._names, self._after_name))))

    def _after_name(self, name: str) -> State:
        return Lit(",", lambda: Space(Lit('"arguments":', lambda: Space(Lit("{", lambda: self._args(name, ()))))))

    def _params(self, name: str) -> tuple[dict[str, Any], set[str]]:
        params = self.tools[name]
        return params.get("properties") or {}, set(params.get("required") or [])

    def _args(self, name: str, used: tuple[str, ...]) -> State:
        """After `{` or a value: the next key, or the end of the arguments once every required key is given."""
        props, required = self._params(name)
        remaining = tuple(k for k in props if k not in used)
        return _ArgsState(self, name, used, remaining, can_close=required <= set(used), first=not used)

    def value(self, schema: dict[str, Any], then: Callable[[], State]) -> State:
        """The state that reads one value of `schema`."""
        if "enum" in schema:
            values = schema["enum"]
            if all(isinstance(v, str) for v in values):
                return Lit('"', lambda: Choice(tuple(values), lambda _: then()))
            literals = tuple(json.dumps(v) for v in values)  # numbers, booleans, null: written bare, as JSON has them
            return Bare("".join(sorted(set("".join(literals)))), lambda p: any(x.startswith(p) for x in literals),
                        lambda p: p in literals, then)
        kind = schema.get("type")
        if kind == "boolean":
            words = ("true", "false")
            return Bare("truefals", lambda p: any(w.startswith(p) for w in words), lambda p: p in words, then)
        if kind in ("integer", "number"):
            chars = "-0123456789" + ("." if kind == "number" else "")
            nums = self.numbers if kind == "number" else self.integers
            if nums is not None:
                return Bare(chars, lambda p: _SEP + p in nums, lambda p: _SEP + p + _SEP in nums, then)
            return Bare(chars, lambda p: _JSON_NUMBER.fullmatch(p + "0") is not None or p == "-",
                        lambda p: _JSON_NUMBER.fullmatch(p) is not None, then)
        return Lit('"', lambda: Text(then, self.texts))


@dataclass(frozen=True)
class _ArgsState(State):
    """Inside the arguments object: a key (first, or after a comma) or the closing brace."""

    grammar: CallGrammar
    name: str
    used: tuple[str, ...]
    remaining: tuple[str, ...]
    can_close: bool
    first: bool

    def step(self, ch: str) -> State | None:
        if ch == "}" and self.can_close:
            return Lit("}", Done)
        if self.first:
            return self._key().step(ch) if ch == '"' and self.remaining else None
        if ch == "," and self.remaining:
            return Space(self._key())
        return None

    def _key(self) -> State:
        props, _ = self.grammar._params(self.name)

        def after_key(key: str) -> State:
            then = lambda: self.grammar._args(self.name, (*self.used, key))  # noqa: E731
            return Lit(":", lambda: Space(self.grammar.value(props[key] or {}, then)))

        return Lit('"', lambda: Choice(self.remaining, after_key))


def _number_source(texts: Iterable[str], integers: bool = False) -> str:
    """Every number written in `texts` (only whole ones with `integers`), each also as JSON prints it (3.90 -> 3.9,
    007 -> 7), between separators: a number is allowed when it stands between two of them."""
    found: set[str] = set()
    for text in texts:
        for raw in _NUMBER.findall(text):
            value = float(raw)
            if value.is_integer():
                found.add(str(int(value)))
            if not integers:
                found.update((raw, json.dumps(value)))
    return _SEP + _SEP.join(sorted(found)) + _SEP


def walk(state: State, text: str) -> State | None:
    """The state after all of `text`, or None if some character is not allowed."""
    current: State | None = state
    for ch in text:
        current = current.step(ch) if current is not None else None
    return current


class VocabTrie:
    """The tokenizer's ordinary tokens (special tokens and partial UTF-8 pieces left out) in a character trie, and
    the texts of the tokens that hold a double quote (the only ones prose has to check)."""

    def __init__(self, tokenizer: Any):
        self.root: dict[str, Any] = {}
        self.quoting: dict[int, str] = {}
        special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        for tid in range(len(tokenizer)):
            if tid in special:
                continue
            text = tokenizer.decode([tid], clean_up_tokenization_spaces=False)
            if not text or "\ufffd" in text:
                continue
            if '"' in text:
                self.quoting[int(tid)] = text
            node = self.root
            for ch in text:
                node = node.setdefault(ch, {})
            node.setdefault("", []).append(tid)

    def allowed(self, state: State) -> dict[int, State]:
        """Every token that can follow `state`, with the state after it."""
        out: dict[int, State] = {}
        stack = [(self.root, state)]
        while stack:
            node, current = stack.pop()
            for ch, child in node.items():
                if ch == "":
                    continue
                nxt = current.step(ch)
                if nxt is None:
                    continue
                for tid in child.get("", ()):
                    out[tid] = nxt
                stack.append((child, nxt))
        return out
