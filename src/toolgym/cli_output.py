"""How the CLI prints listings, shared by every command group: one console, the `--json` option and `emit_rows`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (one array of objects) instead of a table.")]


def emit_rows(columns: list[str], rows: list[list[object]], as_json: bool = False) -> None:
    """A listing as JSON (--json), as tab-separated lines when stdout is not a terminal (nothing truncated), or as a
    table on a terminal."""
    if as_json:
        typer.echo(json.dumps([dict(zip(columns, row)) for row in rows], indent=2))
    elif not console.is_terminal:
        typer.echo("\n".join("\t".join(map(str, line)) for line in [columns, *rows]))
    else:
        table = Table(*columns)
        for row in rows:
            table.add_row(*map(str, row))
        console.print(table)
