"""The vLLM server backend: a token-level Policy over a vLLM OpenAI-compatible server running in its own process.

vLLM lives in a virtual environment of its own (`make vllm-env` installs the CPU build, which pins a transformers
older than toolgym's), so toolgym drives it the way users run it: over HTTP. Each request goes to
`/v1/completions` with the exact prompt token ids, `return_tokens_as_token_ids` (the sampled ids come back as
"token_id:N") and `logprobs: 0` (the raw-logit logprob of each sampled id, the pi_old RL needs), so rollouts keep
tokens exactly as with the transformers backend.

The trainer publishes weights by writing a checkpoint and asking the server to load it in place
(`/collective_rpc` `reload_weights`, served when VLLM_SERVER_DEV_MODE=1) and to label it (`/update_weight_version`).
A training run wraps its policy in SyncedPolicy, so no batch is out while weights are swapped and each
completion carries the version that produced it. The served copy is written with an explicit, untied
`lm_head.weight`: vLLM 0.32's in-place reload leaves a tied output head at its old values ("ParallelLMHead: Failed
to load weights"), so a tied head would serve stale logits.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from safetensors.torch import save_file
from transformers import GenerationConfig

from toolgym.policy.base import Completion, GenerationRequest, SamplingParams
from toolgym.policy.hf import HFPolicy, load_causal_lm, load_tokenizer, stop_ids

DEFAULT_VLLM_PYTHON = ".venv-vllm/bin/python"
_SERVED_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                 "special_tokens_map.json")


class VLLMServerError(RuntimeError):
    """The vLLM server could not be started, or answered a request with an error."""


def save_served_checkpoint(state_dict: dict[str, torch.Tensor], config: dict[str, Any], out: Path) -> Path:
    """Write `state_dict` as a safetensors checkpoint vLLM can load and reload: untied output head, contiguous
    CPU tensors, `config.json` saying `tie_word_embeddings: false`. Written beside `out`, then renamed into place."""
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in state_dict.items()}
    if "lm_head.weight" not in tensors:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(tensors, partial / "model.safetensors", metadata={"format": "pt"})
    (partial / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def export_for_vllm(model_dir: str | Path, out: str | Path) -> Path:
    """A served copy of a transformers checkpoint directory: weights untied (see the module docstring), tokenizer,
    chat template and generation config alongside."""
    model_dir, out = Path(model_dir), Path(out)
    model = load_causal_lm(model_dir)
    served = save_served_checkpoint(model.state_dict(), model.config.to_dict(), out)
    for name in _SERVED_FILES:
        if (model_dir / name).exists():
            shutil.copy2(model_dir / name, served / name)
    return served


class VLLMServerPolicy:
    """A token-level Policy over a vLLM server at `base_url` (e.g. http://127.0.0.1:8000) serving `model_dir`.

    `model_dir` is the served copy (its tokenizer renders prompts here); `publish_dir` receives each published
    checkpoint, which the server must be able to read (same machine or shared storage)."""

    prompt_ids = HFPolicy.prompt_ids
    _completion = HFPolicy._completion

    def __init__(self, base_url: str, model_dir: str | Path, publish_dir: str | Path | None = None,
                 served_name: str | None = None, version: int = 0, max_workers: int = 32, timeout: float = 600.0,
                 client: httpx.Client | None = None):
        self.base_url = base_url.rstrip("/")
        self.model_dir = Path(model_dir)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.stop_ids = stop_ids(self.tokenizer, GenerationConfig.from_pretrained(self.model_dir))
        self.config = json.loads((self.model_dir / "config.json").read_text())
        self.publish_dir = Path(publish_dir) if publish_dir is not None else self.model_dir.parent / "published"
        self.served_name = served_name or str(model_dir)
        self.version = version
        self.client = client or httpx.Client(timeout=timeout)
        self.pool = ThreadPoolExecutor(max_workers=max_workers)

    def _request(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST `body` (GET without one) to the server; its JSON answer, or a VLLMServerError naming the path."""
        if body is None:
            response = self.client.get(self.base_url + path)
        else:
            response = self.client.post(self.base_url + path, json=body)
        if response.status_code != 200:
            raise VLLMServerError(f"vLLM server {path} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    def _one(self, prompt: list[int], sampling: SamplingParams, seed: int | None) -> Completion:
        body: dict[str, Any] = {
            "model": self.served_name, "prompt": prompt, "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature, "top_p": sampling.top_p, "logprobs": 0,
            "return_tokens_as_token_ids": True, "skip_special_tokens": False, "stop_token_ids": sorted(self.stop_ids)}
        if seed is not None:
            body["seed"] = seed
        choice = self._request("/v1/completions", body)["choices"][0]
        sampled = choice["logprobs"] or {"tokens": [], "token_logprobs": []}
        ids = [int(token.removeprefix("token_id:")) for token in sampled["tokens"]]
        return self._completion(ids, [float(lp) for lp in sampled["token_logprobs"]])

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        """Every request in parallel (the server batches them); request i samples with seed `sampling.seed + i`."""
        prompts = [self.prompt_ids(r) for r in requests]
        seeds = [None if sampling.seed is None else sampling.seed + i for i in range(len(requests))]
        return list(self.pool.map(self._one, prompts, [sampling] * len(prompts), seeds))

    def set_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> None:
        """Publish: write the weights under `publish_dir/v{version}`, have the server reload them in place and
        label them `version`; the previous published copy is removed once the server holds the new one."""
        path = save_served_checkpoint(state_dict, self.config, self.publish_dir / f"v{version}")
        self._request("/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(path.resolve())}})
        self._request("/update_weight_version", {"new_version": str(version)})
        previous, self.version = self.version, version
        if previous != version:
            shutil.rmtree(self.publish_dir / f"v{previous}", ignore_errors=True)

    def served_version(self) -> str | None:
        """The weight version the server itself reports (`/weight_info`)."""
        return self._request("/weight_info").get("weight_version")


def _terminate_with_parent() -> None:
    """In the server's child process, before exec: on Linux, have the kernel send it SIGTERM when the thread that
    started it dies, so a killed toolgym process does not leave a server holding memory and a port."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class VLLMServer:
    """A vLLM OpenAI-compatible server for a transformers checkpoint, started from vLLM's own Python.

    `start()` writes the served copy under `workdir/served`, launches
    `python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 with the dev endpoints on, and waits for /health;
    its log goes to `workdir/vllm.log`. `memory_fraction` is vLLM's `--gpu-memory-utilization`, which on the CPU
    build is the share of RAM reserved for the KV cache. Chunked prefill is off: vLLM 0.32's CPU build kills its
    engine ("CPU Generator does not use offset") when a seeded request's prefill is split across steps, which
    many concurrent long prompts (evaluation, rollout groups) bring about."""

    model_dir: Path
    workdir: Path
    python: str = field(default_factory=lambda: os.environ.get("TOOLGYM_VLLM_PYTHON", DEFAULT_VLLM_PYTHON))
    port: int = 0
    memory_fraction: float = 0.05
    max_model_len: int | None = None
    """vLLM's --max-model-len; None takes the model's max_position_embeddings."""
    startup_timeout: float = 300.0
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def served_dir(self) -> Path:
        return self.workdir / "served"

    def start(self) -> VLLMServer:
        if not Path(self.python).exists():
            raise VLLMServerError(f"no vLLM Python at {self.python}: run `make vllm-env`, or set TOOLGYM_VLLM_PYTHON "
                                  "to the python of an environment with vLLM installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        export_for_vllm(self.model_dir, self.served_dir)
        self.port = self.port or _free_port()
        command = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.served_dir.resolve()),
                   "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32",
                   "--gpu-memory-utilization", str(self.memory_fraction), "--no-enable-chunked-prefill",
                   *self.extra_args]
        if self.max_model_len is not None:
            command += ["--max-model-len", str(self.max_model_len)]
        with (self.workdir / "vllm.log").open("w") as log:  # the server keeps its own descriptor
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "VLLM_SERVER_DEV_MODE": "1"}, start_new_session=True,
                                            preexec_fn=_terminate_with_parent)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise VLLMServerError(f"vLLM server exited with {self.process.returncode} while starting:\n"
                                      f"{self.log_tail()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2.0).status_code == 200:
                    self._first_token()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        self.stop()
        raise VLLMServerError(f"vLLM server not healthy after {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def _first_token(self) -> None:
        """Sample one token, so a model the engine cannot run (say, an attention head size vLLM's CPU kernels lack)
        fails here with vLLM's reason rather than as errors in every rollout."""
        body = {"model": str(self.served_dir.resolve()), "prompt": [0], "max_tokens": 1}
        response = httpx.post(self.base_url + "/v1/completions", json=body, timeout=self.startup_timeout)
        if response.status_code != 200:
            self.stop()
            errors = [line for line in self.log_tail(400).splitlines() if "Error" in line]
            raise VLLMServerError(f"vLLM server started but cannot generate ({response.status_code}): "
                                  f"{errors[-1] if errors else response.text[:300]}")

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "vllm.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def policy(self, **kwargs: Any) -> VLLMServerPolicy:
        """A VLLMServerPolicy on this server, publishing under `workdir/published`."""
        return VLLMServerPolicy(self.base_url, self.served_dir, publish_dir=self.workdir / "published",
                                served_name=str(self.served_dir.resolve()), **kwargs)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
