"""The Hermes/Qwen-style chat text format shared by the tiny model, the rollout and SFT data.

A message renders as `<|im_start|>{role}\\n{content}<|im_end|>\\n`. Tools are listed one per line as
`name(param, param?)` inside `<tools>...</tools>` in the system message (`?` marks an optional parameter; an
enumerated parameter shows its values as `param: a|b|c`). Types and descriptions are left out: the tiny model
learns tools from use, and every listed token is context it pays for on each step. An assistant tool call
is written in the content as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (one-line JSON, one per
call, each on its own line after any text); a tool result renders as
`<|im_start|>tool\\n<tool_response>{content}</tool_response><|im_end|>\\n`; the generation prompt is
`<|im_start|>assistant\\n`.

The template is concatenative: render(messages[:i], tools) + render(messages[i:]) == render(messages, tools), so a
rollout can append new turns as token deltas. Render a delta without `tools` (they belong to the first part).
"""

from __future__ import annotations

from typing import Any

from transformers.utils.chat_template_utils import render_jinja_template

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<pad>"
SPECIAL_TOKENS: list[str] = [
    IM_START, IM_END, "<|endoftext|>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
    "<think>", "</think>", PAD,
]

# `{% generation %}` marks the assistant's own tokens, so return_assistant_tokens_mask works for SFT.
CHAT_TEMPLATE = """\
{%- macro tool_lines(tools) -%}
{{- '<tools>\\n' }}
{%- for tool in tools -%}
{%- set f = tool.function if tool.function is defined else tool -%}
{%- set params = f.get('parameters') or {} -%}
{%- set required = params.get('required') or [] -%}
{{- f.name ~ '(' }}
{%- for name, p in (params.get('properties') or {}).items() -%}
{{- name ~ ('' if name in required else '?') ~ (': ' ~ (p.enum | join('|')) if p.enum is defined else '') }}
{%- if not loop.last %}{{- ', ' }}{% endif -%}
{%- endfor -%}
{{- ')\\n' }}
{%- endfor -%}
{{- '</tools>' }}
{%- endmacro -%}
{%- macro text(content) -%}
{{- content if content is string else (content | tojson if content is not none else '') }}
{%- endmacro -%}
{%- set first_is_system = messages and messages[0].role == 'system' -%}
{%- if tools and not first_is_system -%}
{{- '<|im_start|>system\\n' ~ tool_lines(tools) ~ '<|im_end|>\\n' }}
{%- endif -%}
{%- for message in messages -%}
{%- if loop.first and message.role == 'system' -%}
{{- '<|im_start|>system\\n' ~ text(message.content) }}
{%- if tools -%}
{{- ('\\n' if message.content else '') ~ tool_lines(tools) }}
{%- endif -%}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' -%}
{{- '<|im_start|>tool\\n<tool_response>' ~ text(message.content) ~ '</tool_response><|im_end|>\\n' }}
{%- elif message.role == 'assistant' -%}
{{- '<|im_start|>assistant\\n' }}
{%- generation -%}
{{- text(message.content) }}
{%- for call in message.tool_calls or [] -%}
{%- set fn = call.function if call.function is defined else call -%}
{%- if message.content or not loop.first %}{{- '\\n' }}{% endif -%}
{{- '<tool_call>{"name": ' ~ (fn.name | tojson) ~ ', "arguments": ' }}
{{- fn.arguments if fn.arguments is string else (fn.arguments | tojson) }}
{{- '}</tool_call>' }}
{%- endfor -%}
{{- '<|im_end|>' }}
{%- endgeneration -%}
{{- '\\n' }}
{%- else -%}
{{- '<|im_start|>' ~ message.role ~ '\\n' ~ text(message.content) ~ '<|im_end|>\\n' }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\\n' }}
{%- endif -%}
"""


def render(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
           add_generation_prompt: bool = False) -> str:
    """Render a conversation as text with CHAT_TEMPLATE (no tokenizer needed, e.g. to build a tokenizer corpus)."""
    rendered, _ = render_jinja_template([messages], tools=tools or None, chat_template=CHAT_TEMPLATE,
                                        add_generation_prompt=add_generation_prompt)
    return rendered[0]
