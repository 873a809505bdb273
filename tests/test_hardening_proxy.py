"""Class 4 of issue 17: the heavy proxy answers every malformed request with a 4xx and an OpenAI-style error body
(never a 500), limits the request size, hides its docs behind a token, and refuses an empty token."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from toolgym.cli import app as cli_app
from toolgym.heavy.server import create_app

TOKEN = "sekrit"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 300_000


def _upstream(request: httpx.Request) -> httpx.Response:
    """A stand-in upstream: lists one model and rejects every chat request as a real server rejects a bad one."""
    if request.url.path.endswith("/models"):
        return httpx.Response(200, json={"object": "list", "data": [{"id": "m", "object": "model"}]})
    return httpx.Response(400, json={"error": {"message": "upstream says no", "type": "invalid_request_error"}})


@pytest.fixture(scope="module")
def proxy():
    app = create_app("http://127.0.0.1:9/v1", token=TOKEN, max_retries=0, timeout=2, max_body_bytes=LIMIT)
    with TestClient(app, raise_server_exceptions=False) as client:
        state = app.state.proxy
        real = state.http
        state.http = httpx.AsyncClient(transport=httpx.MockTransport(_upstream))
        client.portal.call(real.aclose)
        yield client


def _is_openai_error(resp: httpx.Response) -> bool:
    body = resp.json()
    return isinstance(body.get("error"), dict) and isinstance(body["error"].get("message"), str)


def _post(proxy: TestClient, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return proxy.post("/v1/chat/completions", content=content, headers={**AUTH, **(headers or {})})


CHAT = [{"role": "user", "content": "hi"}]
MALFORMED = [
    b"\xff\xfe\x00garbage",                                                   # not UTF-8
    b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # nesting past the recursion limit
    json.dumps({"model": "m", "x": json.loads("[" * 500 + "]" * 500)}).encode(),  # deep but parseable
    json.dumps({"model": "heavy@" + "9" * 5000 + "/m", "messages": CHAT}).encode(),  # absurd K in the name
    json.dumps({"model": "heavy@99999999999x99999/m", "messages": CHAT}).encode(),
    json.dumps({"model": "heavy/m", "messages": CHAT, "heavy": "yes"}).encode(),  # wrong types in heavy fields
    json.dumps({"model": "heavy/m", "messages": CHAT, "heavy": {"k": "many"}}).encode(),
    json.dumps({"model": "heavy/m", "messages": [1, 2]}).encode(),
    json.dumps({"model": "heavy/m", "messages": [{"role": "wizard", "content": "x"}]}).encode(),
    json.dumps({"model": "heavy/m", "messages": CHAT, "temperature": "hot"}).encode(),
    json.dumps({"model": "heavy/m", "messages": CHAT, "max_tokens": [1]}).encode(),
    json.dumps({"model": "heavy/m", "messages": CHAT, "seed": {"a": 1}}).encode(),
    json.dumps({"model": "heavy/m", "messages": CHAT, "tools": "all"}).encode(),
    json.dumps({"model": "heavy/m", "messages": CHAT, "n": "2"}).encode(),
    json.dumps({"model": 7, "messages": CHAT}).encode(),
    b"[1, 2]",
    b"",
]


@pytest.mark.parametrize("content", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_requests_get_a_400_with_an_openai_error(proxy, content):
    resp = _post(proxy, content)
    assert resp.status_code == 400 and _is_openai_error(resp), resp.text[:300]


def test_a_body_over_the_limit_gets_413(proxy):
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * LIMIT}]}).encode()
    assert _post(proxy, big).status_code == 413

    def chunks():
        yield big  # no Content-Length: the proxy must count while reading
    resp = proxy.post("/v1/chat/completions", content=chunks(), headers=AUTH)
    assert resp.status_code == 413 and _is_openai_error(resp)


def test_unknown_routes_and_methods_get_openai_errors(proxy):
    assert proxy.get("/v1/nothing", headers=AUTH).status_code == 404
    resp = proxy.get("/v1/chat/completions", headers=AUTH)
    assert resp.status_code == 405 and _is_openai_error(resp)


def test_docs_are_off_when_a_token_is_set(proxy):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert proxy.get(path).status_code in (401, 404)
        assert proxy.get(path, headers=AUTH).status_code == 404
    with TestClient(create_app("http://127.0.0.1:9/v1")) as open_proxy:
        assert open_proxy.get("/openapi.json").status_code == 200


def test_an_empty_token_is_refused_at_start_up():
    for empty in ("", "   "):
        with pytest.raises(ValidationError, match="token is empty"):
            create_app("http://127.0.0.1:9/v1", token=empty)
    result = CliRunner().invoke(cli_app, ["heavy", "serve", "--upstream", "http://127.0.0.1:9/v1", "--token", ""])
    assert result.exit_code != 0 and "token is empty" in result.output and "Traceback" not in result.output


def test_a_model_listing_that_is_not_json_is_a_502(proxy):
    state = proxy.app.state.proxy
    good = state.http
    state.http = httpx.AsyncClient(transport=httpx.MockTransport(lambda _r: httpx.Response(200, content=b"<html>")))
    try:
        resp = proxy.get("/v1/models", headers=AUTH)
        assert resp.status_code == 502 and _is_openai_error(resp)
    finally:
        proxy.portal.call(state.http.aclose)
        state.http = good


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12)
MODELS = st.sampled_from(["m", "heavy/m", "heavy@2/m", "heavy@2x2/m", "heavy@0/m", "heavy@" + "9" * 40 + "/m",
                          "heavy@/m", "heavy/", ""]) | JSON_VALUES
BODIES = st.fixed_dictionaries({}, optional={
    "model": MODELS, "messages": st.just(CHAT) | JSON_VALUES, "heavy": JSON_VALUES | st.just({"k": 2}),
    "temperature": JSON_VALUES, "top_p": JSON_VALUES, "n": JSON_VALUES, "seed": JSON_VALUES,
    "max_tokens": JSON_VALUES, "tools": JSON_VALUES, "stream": JSON_VALUES}) | JSON_VALUES


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(BODIES, st.binary(max_size=40))
def test_fuzzed_requests_never_get_a_500(proxy, body, noise):
    for content in (json.dumps(body).encode(), noise):
        resp = _post(proxy, content)
        # 4xx: the request's fault; 502: a well-formed heavy request reached the (dead) upstream
        assert (400 <= resp.status_code < 500 or resp.status_code == 502) and _is_openai_error(resp), resp.text[:300]
