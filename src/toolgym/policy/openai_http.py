"""A Policy over any OpenAI-compatible chat-completions server (vLLM, SGLang, a hosted API).

Requests in a batch run concurrently on a thread pool. Native `tool_calls` come back as OpenAI dicts; text
and per-token logprobs are returned when the server gives them (token ids are not exposed by the API).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from toolgym.policy.base import Completion, GenerationRequest, SamplingParams


class OpenAIPolicy:
    """Chat-level policy: `tokenizer` is None, so rollouts keep messages but no token segments."""

    tokenizer = None

    def __init__(self, base_url: str, model: str, api_key: str | None = None, version: int = 0,
                 max_workers: int = 16, timeout: float = 120.0, native_tools: bool = True,
                 http_client: Any | None = None):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY", "EMPTY"),
                             timeout=timeout, http_client=http_client)
        self.model = model
        self.version = version
        self.native_tools = native_tools
        self.pool = ThreadPoolExecutor(max_workers=max_workers)

    def _one(self, request: GenerationRequest, sampling: SamplingParams) -> Completion:
        kwargs: dict[str, Any] = {"model": self.model, "messages": request.messages, "max_tokens": sampling.max_new_tokens,
                                  "temperature": sampling.temperature, "top_p": sampling.top_p}
        if sampling.seed is not None:
            kwargs["seed"] = sampling.seed
        if request.tools and self.native_tools:
            kwargs["tools"] = request.tools
        choice = self.client.chat.completions.create(**kwargs).choices[0]
        message = choice.message
        tool_calls = [tc.model_dump() for tc in message.tool_calls] if message.tool_calls else None
        logprobs = [t.logprob for t in choice.logprobs.content] if choice.logprobs and choice.logprobs.content else []
        finish = choice.finish_reason if choice.finish_reason in ("stop", "length", "tool_calls") else "stop"
        return Completion(text=message.content or "", logprobs=logprobs, version=self.version, finish_reason=finish,
                          tool_calls=tool_calls)

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        """Requests in parallel; with a seed s, request i samples with s + i (the batch convention VLLMPolicy
        follows), so copies of one conversation differ even on a server that honours seeds."""
        per_request = [sampling if sampling.seed is None else sampling.model_copy(update={"seed": sampling.seed + i})
                       for i in range(len(requests))]
        return list(self.pool.map(self._one, requests, per_request))
