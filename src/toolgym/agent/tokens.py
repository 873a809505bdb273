"""Token bookkeeping for text policies: the model is prompted with exactly the ids it will be trained on.

Sampled ids are appended verbatim (never re-tokenized). Everything else (system, user, tool messages and
template glue) is appended as the chat template's text delta: render(all messages) minus the text the
current ids already stand for. If a template is not concatenative (it rewrites earlier turns), a new
segment starts from a full render, so a training sequence never mixes two renderings.
"""

from __future__ import annotations

from typing import Any

from toolgym.agent.trajectory import TokenSegment


class TokenTracker:
    """Builds the token segments of one episode."""

    def __init__(self, tokenizer: Any, tools: list[dict[str, Any]]):
        self.tokenizer = tokenizer
        self.tools = tools
        self.segments: list[TokenSegment] = []

    def _render(self, messages: list[dict[str, Any]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tools=self.tools or None, add_generation_prompt=True,
                                                  tokenize=False)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    @property
    def current(self) -> TokenSegment:
        return self.segments[-1]

    def text(self) -> str:
        return self.tokenizer.decode(self.current.token_ids, skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)

    def start(self, messages: list[dict[str, Any]]) -> list[int]:
        """A new segment prompted with the full render of `messages`; returns its prompt ids."""
        self.segments.append(TokenSegment())
        self.current.extend(self._encode(self._render(messages)), trainable=False)
        return list(self.current.token_ids)

    def add_sampled(self, ids: list[int], logprobs: list[float] | None = None, version: int = 0,
                    trainable: bool = True) -> None:
        """Append the model's own tokens verbatim (SFT marks failed turns `trainable=False`)."""
        self.current.extend(list(ids), trainable=trainable, logprobs=list(logprobs) if logprobs else None,
                            version=version)

    def sync(self, messages: list[dict[str, Any]]) -> list[int]:
        """Append the template delta for messages added since the last model turn; returns the next prompt."""
        target, have = self._render(messages), self.text()
        if target.startswith(have):
            self.current.extend(self._encode(target[len(have):]), trainable=False)
            return list(self.current.token_ids)
        return self.start(messages)

    def n_tokens(self) -> int:
        """Length of the current segment (the context the model sees now)."""
        return len(self.current.token_ids) if self.segments else 0
