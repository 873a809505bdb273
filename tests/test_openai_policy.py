"""The OpenAI-compatible HTTP policy (native tool calls) and the LLM-driven user simulator, against a fake
chat-completions endpoint served through httpx's mock transport (no network)."""

from __future__ import annotations

import json

import httpx

from toolgym.agent.rollout import Episode, RolloutConfig, run_episodes
from toolgym.agent.user import STOP, PolicyUser
from toolgym.envs.environment import Environment
from toolgym.policy.base import GenerationRequest, SamplingParams
from toolgym.policy.openai_http import OpenAIPolicy
from toolgym.policy.scripted import ScriptedPolicy, clean_result
from toolgym.tasks.text import fmt
from toolgym.tasks.verify import gold_answer


def _server(task, seen):
    """A chat-completions endpoint that follows `task`'s gold chain with native tool_calls."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        done = sum(1 for m in body["messages"] if m["role"] == "tool" and clean_result(m["content"]))
        if done < len(task.gold_chain):
            call = task.gold_chain[done]
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": f"call_{done}", "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}]}
            finish = "tool_calls"
        else:
            message, finish = {"role": "assistant", "content": gold_answer(task)}, "stop"
        return httpx.Response(200, json={"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                         "choices": [{"index": 0, "message": message, "finish_reason": finish}]})

    return handler


def test_http_policy_with_native_tool_calls_passes_a_task(tasks):
    task = next(t for name in sorted(tasks) for t in tasks[name] if len(t.gold_chain) >= 2)
    seen: list[dict] = []
    client = httpx.Client(transport=httpx.MockTransport(_server(task, seen)))
    policy = OpenAIPolicy("http://127.0.0.1:9/v1", "served-model", api_key="k", http_client=client)
    traj = run_episodes([Episode(task=task, env=Environment.from_record(task.env))], policy, RolloutConfig())[0]
    assert traj.passed, traj.verdict
    assert traj.segments == [] and traj.n_tool_calls == len(task.gold_chain)
    assert seen[0]["tools"][0]["type"] == "function" and seen[0]["model"] == "served-model"
    tool_msgs = [m for m in seen[-1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_msgs] == [f"call_{i}" for i in range(len(task.gold_chain))]


def test_server_errors_become_episode_errors(tasks):
    task = tasks["bank"][0]
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500, json={"error": "boom"})))
    policy = OpenAIPolicy("http://127.0.0.1:9/v1", "m", api_key="k", http_client=client, timeout=2.0)
    policy.client = policy.client.with_options(max_retries=0)
    traj = run_episodes([Episode(task=task, env=Environment.from_record(task.env))], policy, RolloutConfig())[0]
    assert traj.termination == "error" and not traj.passed


def test_policy_user_plays_the_user_from_the_profile(tasks):
    task = next(t for name in sorted(tasks) for t in tasks[name] if t.user.on_request)
    prompts = []

    def reply(messages):
        prompts.append(messages)
        return "Here you go." if len(prompts) == 1 else f"Thanks! {STOP}"

    user = PolicyUser(task, ScriptedPolicy(reply))
    assert user.opening() == task.instruction
    first = user.respond("What is your phone number?")
    assert first.text == "Here you go." and not first.done
    assert task.instruction in prompts[0][0]["content"]
    assert all(fmt(v) in prompts[0][0]["content"] for v in task.user.on_request.values())
    assert prompts[0][-1] == {"role": "user", "content": "What is your phone number?"}
    assert user.respond("Done.").done


def test_a_seeded_batch_sends_a_distinct_seed_per_request():
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]})

    policy = OpenAIPolicy("http://127.0.0.1:9/v1", "m", api_key="k",
                          http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    request = GenerationRequest(messages=[{"role": "user", "content": "hello"}])
    policy.generate([request] * 4, SamplingParams(seed=10))
    assert sorted(body["seed"] for body in seen) == [10, 11, 12, 13]
    seen.clear()
    policy.generate([request] * 2, SamplingParams())
    assert all("seed" not in body for body in seen)
