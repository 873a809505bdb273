"""The heavy-thinking proxy end to end on loopback: a fake upstream and the proxy both served by uvicorn in
background threads, driven by the real `openai` client (heavy, streaming, pass-through, auth, upstream failures)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from typer.testing import CliRunner

from toolgym.cli import app as cli_app
from toolgym.heavy.server import create_app

BLOCK = re.compile(r"<candidate (\d+)>\n(.*?)\n</candidate \1>", re.DOTALL)
CHAT = [{"role": "user", "content": "What is 6 x 7?"}]
SLOW_S = 1.5


def fake_upstream(seen: list[dict]) -> FastAPI:
    """A deterministic chat-completions server. A candidate answer names its seed; a summary request (one that
    shows candidates) is answered with `summary[...]` quoting every candidate it saw, in order."""
    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "test"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        seen.append(body)
        model = body["model"]
        if model == "broken":
            return JSONResponse({"error": {"message": "kaboom", "type": "server_error"}}, 500)
        if model == "missing":
            return JSONResponse({"error": {"message": "model 'missing' not found", "type": "invalid_request_error",
                                           "param": None, "code": "model_not_found"}}, 404)
        if model == "slow":
            await asyncio.sleep(SLOW_S)
        blocks = BLOCK.findall(body["messages"][-1]["content"])
        if blocks:
            text = "<think>comparing</think>summary[" + "|".join(t for _, t in blocks) + "]"
        else:
            text = f"<think>seed {body.get('seed')} t={body.get('temperature')}</think>candidate {body.get('seed')}"
        base = {"id": "chatcmpl-fake", "created": 1, "model": model}
        if body.get("stream"):
            pieces = [text[i:i + 5] for i in range(0, len(text), 5)]

            def events():
                for p in pieces:
                    yield "data: " + json.dumps({**base, "object": "chat.completion.chunk", "choices": [
                        {"index": 0, "delta": {"content": p}, "finish_reason": None}]}) + "\n\n"
                yield "data: " + json.dumps({**base, "object": "chat.completion.chunk", "choices": [
                    {"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return {**base, "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}

    return app


class Served:
    """An ASGI app served by uvicorn on a free 127.0.0.1 port in a background thread."""

    def __init__(self, app: FastAPI):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


def dead_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


@pytest.fixture(scope="module")
def seen() -> list[dict]:
    return []


@pytest.fixture(scope="module")
def upstream(seen):
    with Served(fake_upstream(seen)) as served:
        yield served


@pytest.fixture(scope="module")
def proxy(upstream):
    with Served(create_app(upstream.url, default_k=2, max_retries=0, timeout=10)) as served:
        yield served


def client(url: str, key: str = "none", timeout: float = 20) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=timeout)


def test_heavy_model_prefix_runs_k_seeded_candidates_and_a_summary_of_their_stripped_answers(proxy, seen):
    start = len(seen)
    resp = client(proxy.url).chat.completions.create(model="heavy@3/fake", messages=CHAT, seed=7, temperature=0.8)
    assert resp.choices[0].message.content == "<think>comparing</think>summary[candidate 7|candidate 8|candidate 9]"
    assert resp.model == "heavy@3/fake" and resp.choices[0].finish_reason == "stop"
    assert resp.model_extra["heavy"] == {"k": 3, "rounds": 1, "candidates": 3, "upstream_model": "fake"}
    sent = seen[start:]
    candidates, summaries = sent[:3], sent[3:]
    assert sorted(b["seed"] for b in candidates) == [7, 8, 9]
    assert all(b["model"] == "fake" and b["messages"] == CHAT and b["temperature"] == 0.8 for b in candidates)
    assert len(summaries) == 1 and summaries[0]["temperature"] == 0.0 and summaries[0]["messages"][:-1] == CHAT


def test_heavy_field_in_extra_body_and_rounds(proxy, seen):
    start = len(seen)
    resp = client(proxy.url).chat.completions.create(model="fake", messages=CHAT, seed=1,
                                                     extra_body={"heavy": {"k": 2, "rounds": 2}})
    content = resp.choices[0].message.content
    sent = seen[start:]
    assert len(sent) == 6  # 2 x (2 candidates + 1 summary)
    assert resp.model_extra["heavy"]["candidates"] == 4
    # the second summary quotes two fresh candidates and the first summary, thinking stripped
    assert content.startswith("<think>comparing</think>summary[candidate ")
    assert content.endswith("|summary[candidate 1|candidate 2]]")


def test_heavy_streaming_assembles_to_the_non_streaming_answer(proxy):
    c = client(proxy.url)
    whole = c.chat.completions.create(model="heavy/fake", messages=CHAT, seed=3)
    chunks = list(c.chat.completions.create(model="heavy/fake", messages=CHAT, seed=3, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content == "<think>comparing</think>summary[candidate 3|candidate 4]"
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content) > 1
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    assert all(ch.object == "chat.completion.chunk" and ch.model == "heavy/fake" for ch in chunks)


def test_heavy_stream_ends_with_done(proxy):
    with httpx.stream("POST", proxy.url + "/chat/completions", timeout=20,
                      json={"model": "heavy/fake", "messages": CHAT, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.status_code == 200 and lines[-1] == "data: [DONE]"


def test_non_heavy_requests_pass_through_unchanged(proxy, seen):
    c = client(proxy.url)
    start = len(seen)
    resp = c.chat.completions.create(model="fake", messages=CHAT, seed=5, extra_body={"foo": {"bar": [1, 2]}})
    assert resp.id == "chatcmpl-fake" and resp.choices[0].message.content == "<think>seed 5 t=None</think>candidate 5"
    assert seen[start:] == [{"model": "fake", "messages": CHAT, "seed": 5, "foo": {"bar": [1, 2]}}]

    chunks = list(c.chat.completions.create(model="fake", messages=CHAT, seed=6, stream=True))
    assert len(chunks) > 2 and all(ch.id == "chatcmpl-fake" for ch in chunks)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "<think>seed 6 t=None</think>candidate 6"

    start = len(seen)
    c.chat.completions.create(model="fake", messages=CHAT, extra_body={"heavy": False})
    assert seen[start:] == [{"model": "fake", "messages": CHAT}]


def test_upstream_client_errors_pass_through_and_server_errors_become_502(proxy, upstream):
    c = client(proxy.url)
    with pytest.raises(openai.NotFoundError) as err:
        c.chat.completions.create(model="missing", messages=CHAT)
    assert err.value.body["code"] == "model_not_found"
    for model, status in (("broken", 500), ("heavy/broken", 500), ("heavy/missing", 404)):
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model=model, messages=CHAT)
        assert err.value.status_code == 502, model
        assert upstream.url.removesuffix("/v1") in err.value.message and f"HTTP {status}" in err.value.message
    for model in ("heavy/broken", "broken"):
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model=model, messages=CHAT, stream=True)
        assert err.value.status_code == 502 and "HTTP 500" in err.value.message, model
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="missing", messages=CHAT, stream=True)


def test_upstream_down_is_a_clear_502_naming_it():
    url = dead_url()
    with Served(create_app(url, max_retries=0, timeout=5)) as down:
        c = client(down.url)
        for model, stream in (("heavy/fake", False), ("fake", False), ("fake", True)):
            with pytest.raises(openai.APIStatusError) as err:
                c.chat.completions.create(model=model, messages=CHAT, stream=stream)
            assert err.value.status_code == 502, model
            assert url.removesuffix("/v1") in err.value.message and "cannot reach upstream" in err.value.message
            assert err.value.body["type"] == "upstream_unreachable"


def test_upstream_timeout_is_a_504(upstream):
    with Served(create_app(upstream.url, max_retries=0, timeout=0.3)) as impatient:
        c = client(impatient.url)
        for model in ("heavy/slow", "slow"):
            with pytest.raises(openai.APIStatusError) as err:
                c.chat.completions.create(model=model, messages=CHAT)
            assert err.value.status_code == 504 and upstream.url.removesuffix("/v1") in err.value.message


def test_token_is_required_when_set(upstream):
    with Served(create_app(upstream.url, token="s3cret", max_retries=0)) as guarded:
        for key in ("wrong", "s3cret-but-longer"):
            with pytest.raises(openai.AuthenticationError) as err:
                client(guarded.url, key).chat.completions.create(model="fake", messages=CHAT)
            assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"
        bare = httpx.post(guarded.url + "/chat/completions", json={"model": "fake", "messages": CHAT}, timeout=10)
        assert bare.status_code == 401 and "Bearer" in bare.json()["error"]["message"]
        assert httpx.get(guarded.url + "/models", timeout=10).status_code == 401
        ok = client(guarded.url, "s3cret").chat.completions.create(model="heavy/fake", messages=CHAT, seed=0)
        assert ok.choices[0].message.content.endswith("summary[candidate 0|candidate 1|candidate 2|candidate 3]")


def test_models_lists_upstream_and_heavy_variants(proxy):
    assert [m.id for m in client(proxy.url).models.list()] == ["fake", "heavy/fake"]


@pytest.mark.parametrize("model, extra", [("heavy@0/fake", {}), ("heavy@17/fake", {}), ("heavy@4x5/fake", {}),
                                          ("fake", {"heavy": {"k": "many"}}), ("fake", {"heavy": {"K": 2}})])
def test_bad_heavy_requests_are_400(proxy, model, extra):
    with pytest.raises(openai.BadRequestError):
        client(proxy.url).chat.completions.create(model=model, messages=CHAT, extra_body=extra)


def test_cli_serve_passes_its_options(monkeypatch):
    import toolgym.heavy.server as server

    calls = []
    monkeypatch.setattr(server, "serve", lambda *args, **kwargs: calls.append((args, kwargs)))
    result = CliRunner().invoke(cli_app, ["heavy", "serve", "--upstream", "http://127.0.0.1:9/v1", "--port", "8123",
                                          "--k", "3", "--summary-model", "judge"],
                                env={"TOOLGYM_PROXY_TOKEN": "from-env"})
    assert result.exit_code == 0, result.output
    (args, kwargs), = calls
    assert args == ("http://127.0.0.1:9/v1",)
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 8123 and kwargs["default_k"] == 3
    assert kwargs["token"] == "from-env" and kwargs["summary_model"] == "judge"
