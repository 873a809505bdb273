"""Procedural bug injection: AST-located mutations of one function, applied as small text edits so that the rest of
the file keeps its formatting (the fix is the reverse edit of a few characters or lines).

Kinds: a flipped comparison or boolean operator, an off-by-one integer, a removed branch, a removed early return
(a guard whose body returns, raises, breaks or continues), swapped call arguments, a wrong constant.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

KINDS = ("flip_comparison", "flip_boolean", "off_by_one", "remove_branch", "remove_early_return", "swap_arguments",
         "wrong_constant")

_COMPARE_FLIP = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
                 ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.In: ("in", "not in"),
                 ast.NotIn: ("not in", "in"), ast.Is: ("is", "is not"), ast.IsNot: ("is not", "is")}
_JUMPS = (ast.Return, ast.Raise, ast.Continue, ast.Break)


@dataclass(frozen=True)
class Mutation:
    """One candidate bug: where it is and the text edit (character offsets into the original source) that makes it."""

    kind: str
    function: str
    line: int
    start: int
    end: int
    replacement: str

    def apply(self, source: str) -> str:
        return source[: self.start] + self.replacement + source[self.end:]


@dataclass(frozen=True)
class Edit:
    """An exact-string replacement that turns one text into another (`old` occurs exactly once in the text)."""

    old: str
    new: str


class _Offsets:
    """Character offsets of AST positions (which count UTF-8 bytes within a line)."""

    def __init__(self, source: str):
        self.lines = source.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def at(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1]
        return self.starts[lineno - 1] + len(line.encode()[:col].decode(errors="ignore"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.at(node.lineno, node.col_offset), self.at(node.end_lineno, node.end_col_offset)

    def line_span(self, node: ast.stmt) -> tuple[int, int] | None:
        """The whole lines of a statement, when it has them to itself."""
        first, last = self.lines[node.lineno - 1], self.lines[node.end_lineno - 1]
        head = first.encode()[: node.col_offset].decode(errors="ignore")
        tail = last.encode()[node.end_col_offset:].decode(errors="ignore")
        if head.strip() or tail.strip() or first.lstrip().startswith("elif"):
            return None
        return self.starts[node.lineno - 1], self.starts[node.end_lineno]


def _function_nodes(func: ast.AST) -> Iterator[ast.AST]:
    """Nodes of a function's own body (not its decorators or defaults, nor the functions, classes and lambdas
    nested in it), in source order."""
    stack = list(reversed(func.body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.JoinedStr)):
            continue
        yield node
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of every function and method, in source order."""
    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + child.name, child
                yield from visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")
    yield from visit(tree, "")


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            ids.add(id(first.value))
    return ids


def _gap_swap(text: str, start: int, end: int, old: str, new: str) -> str | None:
    """The text between two operands with operator `old` replaced by `new` (parentheses and spaces kept)."""
    gap = text[start:end]
    match = re.fullmatch(r"([\s)\\]*)" + r"\s+".join(map(re.escape, old.split())) + r"([\s(\\]*)", gap)
    return None if match is None else f"{match.group(1)}{new}{match.group(2)}"


def _sole_statement(parents: dict[int, ast.AST], node: ast.stmt) -> bool:
    parent = parents.get(id(node))
    return any(getattr(parent, field, None) == [node] for field in ("body", "orelse", "finalbody", "handlers"))


def _wrong_constant(value: object) -> str | None:
    if isinstance(value, bool):
        return repr(not value)
    if isinstance(value, str) and 0 < len(value) <= 20:
        changed = value.swapcase() if value.swapcase() != value else value[:-1]
        return repr(changed)
    return None


def mutations(source: str, seed: int = 0) -> list[Mutation]:
    """Every candidate mutation of the module's functions, in a deterministic order (off-by-one signs from `seed`)."""
    tree = ast.parse(source)
    offsets = _Offsets(source)
    docstrings = _docstrings(tree)
    rng = random.Random(seed)
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    kept: list[Mutation] = []
    for name, func in _functions(tree):
        found: list[Mutation] = []

        def add(kind: str, function: str, node: ast.AST, start: int, end: int, replacement: str) -> None:
            found.append(Mutation(kind, function, node.lineno, start, end, replacement))

        for node in _function_nodes(func):
            if isinstance(node, ast.Compare) and type(node.ops[0]) in _COMPARE_FLIP:
                old, new = _COMPARE_FLIP[type(node.ops[0])]
                start, end = offsets.span(node.left)[1], offsets.span(node.comparators[0])[0]
                gap = _gap_swap(source, start, end, old, new)
                if gap is not None:
                    add("flip_comparison", name, node, start, end, gap)
            elif isinstance(node, ast.BoolOp):
                old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
                start, end = offsets.span(node.values[0])[1], offsets.span(node.values[1])[0]
                gap = _gap_swap(source, start, end, old, new)
                if gap is not None:
                    add("flip_boolean", name, node, start, end, gap)
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                (start, end), (inner_start, inner_end) = offsets.span(node), offsets.span(node.operand)
                add("flip_boolean", name, node, start, end, source[inner_start:inner_end])
            elif isinstance(node, ast.Constant) and id(node) not in docstrings:
                start, end = offsets.span(node)
                if isinstance(node.value, int) and not isinstance(node.value, bool):
                    step = 1 if node.value == 0 or rng.random() < 0.5 else -1
                    add("off_by_one", name, node, start, end, str(node.value + step))
                replacement = _wrong_constant(node.value)
                if replacement is not None:
                    add("wrong_constant", name, node, start, end, replacement)
            elif isinstance(node, ast.If) and not node.orelse and not _sole_statement(parents, node):
                span = offsets.line_span(node)
                if span is not None:
                    kind = "remove_early_return" if isinstance(node.body[-1], _JUMPS) else "remove_branch"
                    add(kind, name, node, *span, "")
            elif (isinstance(node, ast.Call) and len(node.args) >= 2
                  and not any(isinstance(a, ast.Starred) for a in node.args[:2])):
                (s0, e0), (s1, e1) = offsets.span(node.args[0]), offsets.span(node.args[1])
                first, second = source[s0:e0], source[s1:e1]
                if first != second:
                    add("swap_arguments", name, node, s0, e1, second + source[e0:s1] + first)
        span = offsets.starts[func.lineno - 1], offsets.starts[func.end_lineno]
        original = _parse_function(source[span[0]:span[1]])
        kept += [m for m in found if _changes_meaning(source, span, m, original)]
    return kept


def _parse_function(text: str) -> str | None:
    """The dumped syntax tree of a function's source lines (methods are parsed inside an `if` block)."""
    try:
        return ast.dump(ast.parse(text if not text[:1].isspace() else "if True:\n" + text))
    except SyntaxError:
        return None


def _changes_meaning(source: str, span: tuple[int, int], mutation: Mutation, original: str | None) -> bool:
    """The mutated function still parses and differs from the original as a syntax tree (not only in layout);
    only the function's own lines are parsed, since a mutation never reaches beyond them."""
    start, end = span
    mutant = source[start:mutation.start] + mutation.replacement + source[mutation.end:end]
    changed = _parse_function(mutant)
    return original is not None and changed is not None and changed != original


def reverse_edit(original: str, mutant: str) -> Edit:
    """The exact-string replacement that turns `mutant` back into `original`: the differing lines, widened by
    surrounding lines until the mutant's side occurs exactly once (what a careful fix would replace)."""
    a, b = original.splitlines(keepends=True), mutant.splitlines(keepends=True)
    top = 0
    while top < min(len(a), len(b)) and a[top] == b[top]:
        top += 1
    bottom = 0
    while bottom < min(len(a), len(b)) - top and a[-1 - bottom] == b[-1 - bottom]:
        bottom += 1
    lo, hi_a, hi_b = top, len(a) - bottom, len(b) - bottom
    while True:
        old, new = "".join(b[lo:hi_b]), "".join(a[lo:hi_a])
        if old.strip() and mutant.count(old) == 1:
            return Edit(old=old, new=new)
        if lo == 0 and hi_b == len(b):
            raise ValueError("the mutant does not differ from the original")
        lo, hi_a, hi_b = max(0, lo - 1), min(len(a), hi_a + 1), min(len(b), hi_b + 1)
