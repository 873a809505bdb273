"""The Policy protocol: batch generation that returns text plus the exact token ids, logprobs and version.

Token-level policies (transformers, vLLM, the tiny default) expose `tokenizer` and accept `prompt_ids`, so
the rollout can keep the exact tokens the model sampled. Chat-level policies (OpenAI-compatible HTTP) take
`messages` + `tools` and may return native `tool_calls`; they have `tokenizer = None`.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field


class SamplingParams(BaseModel):
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None


class GenerationRequest(BaseModel):
    """One conversation to continue: OpenAI-format messages and tools, and (token-level) the exact prompt ids."""

    messages: list[dict[str, Any]] = Field(default_factory=list)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    prompt_ids: list[int] | None = None


class Completion(BaseModel):
    """What the policy produced: text, the sampled token ids and their logprobs, and the weights version."""

    text: str
    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[float] = Field(default_factory=list)
    version: int = 0
    finish_reason: Literal["stop", "length", "tool_calls", "error"] = "stop"
    tool_calls: list[dict[str, Any]] | None = None


@runtime_checkable
class Policy(Protocol):
    """Anything that continues a batch of conversations."""

    version: int
    tokenizer: Any

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]: ...
