"""Cold-start SFT: data grounded in executed gold chains, failed turns masked out, loss falls on real data."""

from __future__ import annotations

import re

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from toolgym.agent.toolcall import parse_assistant
from toolgym.sft.data import sft_example, sft_examples
from toolgym.sft.trainer import SFTConfig, collate, sft_loss, tokenize_example, train_sft


def _tasks(tasks):
    return [t for name in sorted(tasks) for t in tasks[name][:3]]


def test_examples_replay_the_gold_chain_with_real_results(tasks):
    task = _tasks(tasks)[0]
    ex = sft_example(task, seed=0, fail_p=0.0, plan_p=0.0)
    calls = [c for m in ex.messages if m["role"] == "assistant" for c in parse_assistant(m["content"]).tool_calls]
    assert calls == task.gold_chain
    assert all(ex.train) and len(ex.train) == len(task.gold_chain) + 1
    assert not any('"error"' in m["content"] for m in ex.messages if m["role"] == "tool")


def test_failed_turns_are_present_but_not_trained(tasks, tiny_dir):
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    ex = sft_example(_tasks(tasks)[1], seed=3, fail_p=1.0, plan_p=0.0)
    assert ex.train.count(False) == len(_tasks(tasks)[1].gold_chain)
    assert any('"error"' in m["content"] for m in ex.messages if m["role"] == "tool")
    ids, mask = tokenize_example(tok, ex)
    trained = tok.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=False)
    wrong = [m["content"] for m, keep in zip([m for m in ex.messages if m["role"] == "assistant"], ex.train)
             if not keep]
    for text in wrong:
        assert text not in trained
    assert "<tool_response>" not in trained


def test_planning_augmentation_names_the_chosen_tool(tasks):
    task = _tasks(tasks)[2]
    ex = sft_example(task, seed=1, fail_p=0.0, plan_p=1.0)
    first = next(m["content"] for m in ex.messages if m["role"] == "assistant")
    turn = parse_assistant(first)
    assert turn.thinking.startswith("Candidates:") and turn.tool_calls[0].name in turn.thinking


def test_sft_lowers_the_loss(tasks, tiny_dir, tmp_path):
    examples = list(sft_examples(_tasks(tasks)[:8], seed=0))
    metrics = train_sft(tiny_dir, examples, tmp_path / "sft", SFTConfig(epochs=8, batch_size=4, lr=3e-3, warmup_steps=1),
                        show_progress=False)
    first, last = metrics[0]["loss"], sum(m["loss"] for m in metrics[-2:]) / 2
    assert last < first * 0.8
    assert (tmp_path / "sft" / "model.safetensors").exists() and (tmp_path / "sft" / "sft_metrics.jsonl").exists()


def test_context_loss_weight_adds_the_loss_on_context_tokens(tasks, tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    batch = collate([tokenize_example(tokenizer, ex) for ex in sft_examples(_tasks(tasks)[:3], seed=0)],
                    tokenizer.pad_token_id)
    own_labels = torch.where(batch["loss_mask"] == 1, batch["input_ids"], -100)
    context_labels = torch.where((batch["loss_mask"] == 0) & (batch["attention_mask"] == 1), batch["input_ids"], -100)
    with torch.no_grad():
        own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=own_labels).loss
        context = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        labels=context_labels).loss
        only_own, _ = sft_loss(model, batch, 0.0)
        weighted, assistant = sft_loss(model, batch, 0.25)
    assert torch.allclose(only_own, own, atol=1e-5) and torch.allclose(assistant, own, atol=1e-5)
    assert torch.allclose(weighted, own + 0.25 * context, atol=1e-5)


def _calls(ex):
    return [c for m in ex.messages if m["role"] == "assistant" for c in parse_assistant(m["content"]).tool_calls]


def test_value_resampling_renames_copied_values_consistently(tasks):
    resampled = 0
    for task in _tasks(tasks):
        plain = sft_example(task, seed=5, fail_p=0.0, plan_p=0.0)
        fresh = sft_example(task, seed=5, fail_p=0.0, plan_p=0.0, resample=True)
        assert fresh == sft_example(task, seed=5, fail_p=0.0, plan_p=0.0, resample=True)
        assert [c.name for c in _calls(fresh)] == [c.name for c in task.gold_chain]
        for turn, (old, new) in enumerate(zip(_calls(plain), _calls(fresh))):
            before_old = "\n".join(m["content"] for m in plain.messages[:plain.messages.index(next(
                m for m in plain.messages if m["role"] == "assistant" and _calls_in(m) == [old]))])
            before_new = "\n".join(m["content"] for m in fresh.messages[:fresh.messages.index(next(
                m for m in fresh.messages if m["role"] == "assistant" and _calls_in(m) == [new]))])
            for key, value in old.arguments.items():
                text = str(value)
                if any(ch.isdigit() for ch in text):
                    resampled += 1
                    assert new.arguments[key] != value and len(str(new.arguments[key])) == len(text)
                    assert type(new.arguments[key]) is type(value)
                    if _appears(text, before_old):
                        assert _appears(str(new.arguments[key]), before_new)
                else:
                    assert new.arguments[key] == value
    assert resampled > 0


def _appears(value, text):
    return re.search(rf"(?<![\w.]){re.escape(value)}(?![\w]|\.\d)", text) is not None


def _calls_in(message):
    return parse_assistant(message["content"]).tool_calls


def test_variants_add_resampled_copies_of_each_task(tasks):
    some = _tasks(tasks)[:4]
    examples = list(sft_examples(some, seed=0, variants=3))
    assert [ex.task_id for ex in examples] == [t.id for t in some for _ in range(3)]
    renamed = 0
    for task, group in zip(some, (examples[i:i + 3] for i in range(0, len(examples), 3))):
        assert group[0].messages[1]["content"] == task.instruction
        quoted = [str(v) for c in task.gold_chain for v in c.arguments.values()
                  if any(ch.isdigit() for ch in str(v)) and _appears(str(v), task.instruction)]
        if quoted:
            renamed += 1
            assert len({ex.messages[1]["content"] for ex in group}) == 3
    assert renamed > 0


def test_answers_quote_each_fact_as_the_tool_results_wrote_it(tasks):
    from toolgym.policy.constrained import CallGrammar, walk
    from toolgym.envs.families import replay

    with_facts = [t for name in sorted(tasks) for t in tasks[name] if t.required_answers]
    assert with_facts
    for task in with_facts:
        ex = sft_example(task, seed=1, fail_p=0.0, plan_p=0.0)
        answer = ex.messages[-1]["content"]
        assert replay(task, task.gold_chain, answer).passed, answer
        quoted = answer.split('"')[1::2]
        assert quoted, answer
        # a copy-mode policy could have written this answer: every quotation occurs in the conversation
        prose = CallGrammar.for_request(ex.tools, ex.messages, "copy").prose()
        assert walk(prose, answer) is not None, answer


def test_max_steps_trains_exactly_that_many_steps_passing_over_the_data_again(tasks, tiny_dir, tmp_path):
    examples = [sft_example(t, seed=i, fail_p=0.0, plan_p=0.0) for i, t in enumerate(_tasks(tasks)[:3])]
    metrics = train_sft(tiny_dir, examples, tmp_path / "sft", SFTConfig(max_steps=5, batch_size=2, warmup_steps=1),
                        show_progress=False)
    assert len(metrics) == 5 and [m["epoch"] for m in metrics] == [0, 0, 1, 1, 2]
