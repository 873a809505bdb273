"""The embedded default model: a byte-level BPE tokenizer trained on the task corpus plus a randomly initialised
Qwen2/Llama causal LM, saved as an ordinary transformers checkpoint directory (so HFPolicy loads it like any
real model)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

from toolgym.envs.environment import Environment
from toolgym.policy.chat_format import CHAT_TEMPLATE, IM_END, PAD, SPECIAL_TOKENS, render
from toolgym.policy.hf import quiet_transformers
from toolgym.tasks.model import Task
from toolgym.tasks.verify import gold_answer

_SPECIAL_SPLIT = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def gold_conversation(task: Task, env: Environment) -> list[dict[str, Any]]:
    """The gold episode as OpenAI messages: instruction, one tool call per gold step with its real result, answer.

    Runs the gold chain on a fork of `env`, which is left untouched."""
    work = env.fork()
    messages: list[dict[str, Any]] = [{"role": "user", "content": task.instruction}]
    for call in task.gold_chain:
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": call.name, "arguments": call.arguments}}]})
        messages.append({"role": "tool", "content": work.call(call.name, call.arguments).text()})
    messages.append({"role": "assistant", "content": gold_answer(task)})
    work.close()
    return messages


def corpus_from_tasks(tasks: Iterable[Task], envs: dict[str, Environment] | None = None) -> Iterator[str]:
    """Rendered gold conversations (tools, instruction, calls, real results, answer): tokenizer training text.

    `envs` maps environment ids to environments in their initial state; missing ones are rebuilt from the task."""
    envs = dict(envs or {})
    for task in tasks:
        env = envs.get(task.env.id)
        if env is None:
            env = envs[task.env.id] = Environment.from_record(task.env)
        yield render(gold_conversation(task, env), tools=env.openai_tools())


def _without_special_tokens(corpus: Iterable[str]) -> Iterator[str]:
    """The corpus split at special tokens, so BPE spends no merges on their spellings (they are single ids)."""
    for text in corpus:
        yield from (piece for piece in _SPECIAL_SPLIT.split(text) if piece)


WORD_PIECES = r"\p{L}+|\p{N}|\s|[^\p{L}\p{N}\s]+"
"""Pre-tokenizer pieces: a run of letters, one digit, one whitespace character, or a run of other symbols."""


def train_tokenizer(corpus: Iterable[str], vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer over word-aligned pieces, with SPECIAL_TOKENS as single special ids and CHAT_TEMPLATE.

    Pieces never join a word to the space or underscore before it, so a word is the same token wherever it stands:
    `daily price` in a question and `daily_price` in a tool result share `daily` and `price`, and copying a value
    named in the conversation is plain induction (find the same token, copy what follows). Byte-level BPE's usual
    pieces (`Ġprice` vs `_price`) leave a tiny model to learn that equivalence first. AutoTokenizer loads the saved
    tokenizer.json pipeline as trained (tests/test_tiny_policy.py checks the ids match)."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(WORD_PIECES), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_without_special_tokens(corpus), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD,
                                   chat_template=CHAT_TEMPLATE, model_max_length=model_max_length)


def build_tiny_model(corpus: Iterable[str], out_dir: Path, vocab_size: int = 2000, hidden_size: int = 128,
                     num_layers: int = 4, num_heads: int = 4, max_position_embeddings: int = 2048,
                     arch: Literal["qwen2", "llama"] = "qwen2", seed: int = 0) -> Path:
    """Train the tokenizer on `corpus`, randomly initialise a small causal LM, save both to `out_dir`.

    Deterministic: the same corpus and arguments give identical tokenizer files and weights."""
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(corpus, vocab_size, max_position_embeddings)
    config_cls = Qwen2Config if arch == "qwen2" else LlamaConfig
    config = config_cls(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return out_dir
