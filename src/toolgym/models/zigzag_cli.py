"""`toolgym zigzag ...`: convert a checkpoint to Zig-Zag attention and run its recovery fine-tune."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

zigzag_app = typer.Typer(help="Zig-Zag attention: half the layers see only sink + local tokens (bounded KV cache).",
                         no_args_is_help=True)
console = Console()


def _checked_device(name: str) -> str:
    """The --device value if torch can use it here; a usage error (exit 2, before any loading) otherwise."""
    from toolgym.device import checked_device

    try:
        return checked_device(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


ModelDir = Annotated[Path, typer.Argument(help="A transformers Llama/Qwen2-family checkpoint directory.", exists=True,
                                          file_okay=False)]


def _calibration_ids(model_dir: Path, calib: Path | None, n_tokens: int, vocab_size: int, seed: int):
    import torch

    if calib is None:
        console.print(f"[yellow]no --calib data: calibrating on {n_tokens} random tokens (seed {seed}); pass real "
                      "text for a meaningful ranking[/yellow]")
        return torch.randint(0, vocab_size, (1, n_tokens), generator=torch.Generator().manual_seed(seed))
    from toolgym.policy.hf import load_tokenizer

    from toolgym.models.recovery import packed_windows

    window = packed_windows(load_tokenizer(model_dir), calib, n_tokens)[:1]
    if not window or len(window[0]) < n_tokens:
        raise typer.BadParameter(f"--calib holds fewer than {n_tokens} tokens")
    return torch.tensor(window)


@zigzag_app.command("convert")
def convert(
    model_dir: ModelDir,
    out: Annotated[Path, typer.Option(help="Output checkpoint directory (settings saved in config.json 'zigzag').")],
    sink: Annotated[int, typer.Option(help="Sink tokens every sparse-layer query sees.", min=0)] = 128,
    local: Annotated[int, typer.Option(help="Most recent tokens a sparse-layer query sees.", min=1)] = 896,
    select: Annotated[str, typer.Option(help="interleaved (layers 1,3,5,...) or calibrated (least important half).")]
    = "interleaved",
    layers: Annotated[Optional[str], typer.Option(help="Explicit sparse layers, e.g. '1,3' (overrides --select).")]
    = None,
    calib: Annotated[Optional[Path], typer.Option(help="Calibration text (.jsonl with 'text', or plain text).",
                                                  exists=True, dir_okay=False)] = None,
    calib_tokens: Annotated[Optional[int], typer.Option(help="Calibration length (default 2 x (sink + local)).")]
    = None,
    block_size: Annotated[int, typer.Option(help="Prefill tile size in query tokens (speed only).", min=1)] = 128,
    seed: Annotated[int, typer.Option(help="Seed of the random calibration tokens (without --calib).")] = 0,
) -> None:
    """Convert a checkpoint to Zig-Zag attention and save it (load it back with toolgym.models.zigzag.load_zigzag)."""
    from toolgym.policy.hf import load_causal_lm, load_tokenizer, quiet_transformers

    from toolgym.models.zigzag import (
        ZigZagConfig,
        calibrated_layers,
        layer_importance,
        to_zigzag,
    )

    if select not in ("interleaved", "calibrated"):
        raise typer.BadParameter("--select must be interleaved or calibrated")
    explicit = [int(x) for x in layers.split(",")] if layers else None
    cfg = ZigZagConfig(sink_tokens=sink, local_tokens=local, sparse_layers=explicit, selection=select,
                       block_size=block_size)
    model = load_causal_lm(model_dir)
    importance = None
    if explicit is None and select == "calibrated":
        ids = _calibration_ids(model_dir, calib, calib_tokens or 2 * (sink + local), model.config.vocab_size, seed)
        with console.status(f"calibrating {model.config.num_hidden_layers} layers on {ids.shape[-1]} tokens"):
            importance = layer_importance(model, ids, cfg)
        cfg = cfg.model_copy(update={"sparse_layers": calibrated_layers(importance)})
    try:
        to_zigzag(model, cfg)
    except (TypeError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    with quiet_transformers():
        model.save_pretrained(out)
        if (model_dir / "tokenizer_config.json").exists():
            load_tokenizer(model_dir).save_pretrained(out)
    table = Table("layer", "attention", *(["importance (KL)"] if importance else []))
    sparse = set(model.config.zigzag["sparse_layers"])
    for i in range(model.config.num_hidden_layers):
        table.add_row(str(i), f"sparse ({sink}+{local})" if i in sparse else "full",
                      *([f"{importance[i]:.3g}"] if importance else []))
    console.print(table)
    console.print(f"zigzag model -> {out}")


@zigzag_app.command("finetune")
def finetune(
    model_dir: ModelDir,
    data: Annotated[Path, typer.Option(help="Training text: .jsonl with a 'text' field per line, or a plain file.",
                                       exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Output checkpoint directory.")],
    teacher: Annotated[Optional[Path], typer.Option(help="Full-attention teacher (default: MODEL_DIR loaded with "
                                                         "full attention).", exists=True, file_okay=False)] = None,
    objective: Annotated[str, typer.Option(help="distill (KL to the teacher's logits) or lm (next-token loss).")]
    = "distill",
    steps: Annotated[int, typer.Option(help="Optimizer steps.", min=1)] = 200,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW).")] = 2e-5,
    batch_size: Annotated[int, typer.Option(help="Windows per step.", min=1)] = 1,
    max_len: Annotated[int, typer.Option(help="Tokens per packed training window.", min=2)] = 4096,
    device: Annotated[str, typer.Option(help="Torch device: cpu, cuda, cuda:N or mps.",
                                        callback=_checked_device)] = "cpu",
    seed: Annotated[int, typer.Option(help="Data order and init seed.")] = 0,
) -> None:
    """Recovery fine-tune of a Zig-Zag checkpoint (distillation from full attention, or plain LM loss)."""
    from toolgym.models.recovery import RecoveryConfig, recover_checkpoint

    if objective not in ("distill", "lm"):
        raise typer.BadParameter("--objective must be distill or lm")
    cfg = RecoveryConfig(objective=objective, steps=steps, lr=lr, batch_size=batch_size, max_len=max_len, seed=seed)
    metrics = recover_checkpoint(model_dir, data, out, cfg, teacher, device)
    first, last = metrics[0]["loss"], metrics[-1]["loss"]
    console.print(f"{len(metrics)} steps, {objective} loss {first:.4f} -> {last:.4f}; model -> {out}")
