"""An OpenAI-compatible proxy that adds Heavy Thinking to any chat-completions upstream (vLLM, SGLang, an API).

Routes: `POST /v1/chat/completions` and `GET /v1/models` (the upstream's models plus a `heavy/<id>` entry each).

Heavy mode is chosen by the model name, `heavy/<model>` (the default K), `heavy@K/<model>` or `heavy@KxR/<model>`
(K candidates, R rounds), or by the body field `"heavy": true | {"k": K, "rounds": R}` (openai clients pass it
with `extra_body`). A heavy request runs `HeavyThinker` with the upstream `<model>` as candidate policy and as
summary policy (or `summary_model` on `summary_upstream`), using the request's messages, tools, temperature,
top_p, max_tokens / max_completion_tokens and seed, and answers one `chat.completion` (or, with `stream`, the
final answer as `chat.completion.chunk` SSE events ending with `data: [DONE]`) carrying a `heavy` field with K,
rounds and the candidate count. Candidates never reach the client.

Every other request is forwarded unchanged, streaming included, and its answer comes back unchanged; an
upstream 4xx (the client's error) is forwarded as is. An unreachable upstream or an upstream 5xx becomes a 502,
a timeout a 504, each with an OpenAI-style error body naming the upstream URL and its status (heavy requests
also turn upstream 4xx into 502, since the client did not write the failing request).

Auth: with a token set, every route requires `Authorization: Bearer <token>`, else 401, and the API docs pages
are off; an empty token is refused at start-up. The proxy authenticates to the upstream only with
`upstream_api_key` (never with the client's header).

Bad input: every malformed request (bytes that are not UTF-8 JSON, nesting deeper than MAX_BODY_NESTING, a K
beyond `max_k`, fields of the wrong type, an unknown route) gets a 4xx with an OpenAI-style error body saying what
is wrong; a body over `max_body_bytes` gets 413 before it is read whole.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import httpx
import openai
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from toolgym.agent.toolcall import value_depth
from toolgym.heavy.thinking import HeavyConfig, HeavyResult, HeavyThinker
from toolgym.policy.base import Completion
from toolgym.policy.openai_http import OpenAIPolicy
from toolgym.validation import problems

log = logging.getLogger(__name__)

HEAVY_MODEL = re.compile(r"^heavy(?:@(\d+)(?:x(\d+))?)?/(.+)$")
STREAM_CHUNK_CHARS = 24
MAX_BODY_NESTING = 64
"""Deepest JSON nesting a request body may have (tool schemas included)."""
MAX_COUNT_DIGITS = 6
"""Longest K or rounds a heavy model name may spell; longer is an error, not a huge number to parse."""


class ProxySettings(BaseModel):
    """Where the proxy sends requests, how it authenticates both ways, and the heavy defaults and limits."""

    model_config = ConfigDict(extra="forbid")

    upstream: str = Field(description="Base URL of the upstream OpenAI-compatible API, e.g. http://127.0.0.1:8001/v1.")
    upstream_api_key: str | None = Field(None, description="Bearer key the proxy sends upstream (None: no key).")
    token: str | None = Field(None, description="Bearer token clients must send (None: no auth).")
    default_k: int = Field(4, ge=1, description="Candidates when a heavy request names no K.")
    max_k: int = Field(16, ge=1, description="Largest K (and K x rounds) a request may ask for.")
    rounds: int = Field(1, ge=1, description="Rounds when a heavy request names none.")
    summary_upstream: str | None = Field(None, description="Base URL of the summary model (None: the upstream).")
    summary_model: str | None = Field(None, description="Summary model name (None: the candidate model).")
    summary_temperature: float = Field(0.0, ge=0.0, description="Sampling temperature of the summary.")
    max_new_tokens: int = Field(1024, ge=1, description="Tokens per candidate and summary if the request sets none.")
    timeout: float = Field(120.0, gt=0, description="Seconds to wait for one upstream answer.")
    max_retries: int = Field(1, ge=0, description="Retries of a failed upstream call in heavy mode.")
    max_body_bytes: int = Field(8 * 2**20, ge=1024, description="Largest request body accepted (else 413).")

    @field_validator("token")
    @classmethod
    def _token_not_empty(cls, token: str | None) -> str | None:
        if token is not None and not token.strip():
            raise ValueError("the token is empty: set a real token, or none to run without auth")
        return token


class ChatMessage(BaseModel):
    """One message of a heavy request, as far as the proxy reads it."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class HeavyChatRequest(BaseModel):
    """The fields of a chat request heavy mode reads, checked before any upstream call."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    n: int | None = None
    temperature: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    top_p: float | None = Field(None, allow_inf_nan=False)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stream: bool | None = None


class HeavyOptions(BaseModel):
    """The `heavy` request field: K candidates and rounds (each None: the server default)."""

    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(None, ge=1)
    rounds: int | None = Field(None, ge=1)


class ProxyError(Exception):
    """An error the client gets as an OpenAI-style JSON body with this HTTP status."""

    def __init__(self, status: int, message: str, type_: str = "upstream_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


def heavy_request(body: dict[str, Any], settings: ProxySettings) -> tuple[str, int, int] | None:
    """(upstream model, K, rounds) when the body asks for heavy mode, else None; ProxyError(400) when malformed."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ProxyError(400, "the request needs a 'model' string", "invalid_request_error")
    match = HEAVY_MODEL.match(model)
    field = body.get("heavy")
    if match is None and field in (None, False):
        return None
    try:
        options = HeavyOptions.model_validate({} if field is None or field is True else field)
    except ValidationError as exc:
        message = f"bad 'heavy' field: {'; '.join(problems(exc, 'heavy'))}"
        raise ProxyError(400, message, "invalid_request_error") from None
    named = [g for g in (match.groups()[:2] if match else ()) if g]
    if any(len(g) > MAX_COUNT_DIGITS for g in named):
        raise ProxyError(400, f"heavy mode allows K x rounds <= {settings.max_k}; the model name asks for more",
                         "invalid_request_error")
    k = options.k or (int(match.group(1)) if match and match.group(1) else settings.default_k)
    rounds = options.rounds or (int(match.group(2)) if match and match.group(2) else settings.rounds)
    if not 1 <= k <= settings.max_k or rounds < 1 or k * rounds > settings.max_k:
        raise ProxyError(400, f"heavy mode allows 1 <= K and K x rounds <= {settings.max_k}; got K={k}, "
                              f"rounds={rounds}", "invalid_request_error")
    return (match.group(3) if match else model), k, rounds


def upstream_error(exc: Exception) -> ProxyError:
    """A failed upstream call (openai or httpx exception) as a 502/504 naming the upstream URL and its status."""
    try:
        url = str(exc.request.url)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when the request is unknown
        url = "(unknown URL)"
    if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException)):
        return ProxyError(504, f"upstream {url} did not answer in time", "upstream_timeout")
    if isinstance(exc, openai.APIStatusError):
        return ProxyError(502, f"upstream {url} answered HTTP {exc.status_code}: {exc.message}", "upstream_error",
                          str(exc.status_code))
    return ProxyError(502, f"cannot reach upstream {url}: {exc}", "upstream_unreachable")


def _status_error(url: str, status: int, content: bytes) -> ProxyError:
    return ProxyError(502, f"upstream {url} answered HTTP {status}: {content[:500].decode('utf-8', 'replace')}",
                      "upstream_error", str(status))


def completion_body(result: HeavyResult, model: str, k: int, rounds: int, upstream_model: str) -> dict[str, Any]:
    """The OpenAI `chat.completion` for a heavy answer (with a `heavy` field describing the run)."""
    answer = result.answer
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    if answer.tool_calls:
        message["tool_calls"] = answer.tool_calls
    return {"id": f"chatcmpl-heavy-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message, "logprobs": None,
                                         "finish_reason": _finish(answer)}],
            "heavy": {"k": k, "rounds": rounds, "candidates": len(result.candidates), "upstream_model": upstream_model}}


def _finish(answer: Completion) -> str:
    return "tool_calls" if answer.tool_calls else ("length" if answer.finish_reason == "length" else "stop")


def stream_events(body: dict[str, Any]) -> Iterator[str]:
    """A finished `chat.completion` as SSE `chat.completion.chunk` events (text in small pieces), then [DONE]."""
    choice = body["choices"][0]
    text = choice["message"]["content"] or ""
    base = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": body["model"]}
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": text[i:i + STREAM_CHUNK_CHARS]} for i in range(0, len(text), STREAM_CHUNK_CHARS)]
    calls = choice["message"].get("tool_calls") or []
    deltas += [{"tool_calls": [{"index": i, **call}]} for i, call in enumerate(calls)]
    for delta in deltas:
        yield _sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]})
    last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": choice["finish_reason"]}
    yield _sse({**base, "choices": [last], "heavy": body["heavy"]})
    yield "data: [DONE]\n\n"


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


class HeavyProxy:
    """The proxy's state: settings, one async HTTP client for pass-through, and cached upstream policies."""

    def __init__(self, settings: ProxySettings):
        self.settings = settings
        self.http: httpx.AsyncClient | None = None
        self._policies: dict[tuple[str, str], OpenAIPolicy] = {}
        self._lock = threading.Lock()

    def _url(self, path: str) -> str:
        return f"{self.settings.upstream.rstrip('/')}/{path}"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.settings.upstream_api_key:
            headers["Authorization"] = f"Bearer {self.settings.upstream_api_key}"
        return headers

    def policy(self, base_url: str, model: str) -> OpenAIPolicy:
        """The (cached) chat-level policy for `model` on `base_url`."""
        with self._lock:
            if (base_url, model) not in self._policies:
                policy = OpenAIPolicy(base_url, model, api_key=self.settings.upstream_api_key or "EMPTY",
                                            timeout=self.settings.timeout)
                policy.client = policy.client.with_options(max_retries=self.settings.max_retries)
                self._policies[base_url, model] = policy
            return self._policies[base_url, model]

    def close_policies(self) -> None:
        """Close every cached upstream client and its thread pool."""
        with self._lock:
            for policy in self._policies.values():
                policy.pool.shutdown(wait=False)
                policy.client.close()
            self._policies.clear()

    def think(self, body: dict[str, Any], model: str, k: int, rounds: int) -> HeavyResult:
        """Run Heavy Thinking for one request (blocking; call it from a worker thread)."""
        s = self.settings
        try:
            request = HeavyChatRequest.model_validate(body)
        except ValidationError as exc:
            message = f"bad heavy request: {'; '.join(problems(exc, 'body'))}"
            raise ProxyError(400, message, "invalid_request_error") from None
        if (request.n or 1) != 1:
            raise ProxyError(400, "heavy mode returns one choice: 'n' must be 1", "invalid_request_error")
        messages, tools = body["messages"], request.tools or None
        try:
            config = HeavyConfig(k=k, rounds=rounds, temperature=_given(request.temperature, 1.0),
                                 top_p=_given(request.top_p, 1.0), summary_temperature=s.summary_temperature,
                                 max_new_tokens=request.max_completion_tokens or request.max_tokens
                                 or s.max_new_tokens, seed=request.seed)
        except ValidationError as exc:
            raise ProxyError(400, f"bad sampling parameters: {'; '.join(problems(exc, 'body'))}",
                             "invalid_request_error") from None
        candidates = self.policy(s.upstream, model)
        summary = self.policy(s.summary_upstream or s.upstream, s.summary_model or model)
        try:
            return HeavyThinker(candidates, summary, config).answer(messages, tools)
        except openai.APIError as exc:
            raise upstream_error(exc) from None

    async def forward(self, method: str, path: str, content: bytes | None = None) -> httpx.Response:
        """Send one request upstream and read its whole answer; 5xx and network failures become ProxyErrors."""
        assert self.http is not None
        try:
            resp = await self.http.request(method, self._url(path), content=content, headers=self._headers())
        except httpx.HTTPError as exc:
            raise upstream_error(exc) from None
        if resp.status_code >= 500:
            raise _status_error(self._url(path), resp.status_code, resp.content)
        return resp

    async def forward_stream(self, content: bytes) -> StreamingResponse | Response:
        """Send a streaming chat request upstream and relay its bytes as they come."""
        assert self.http is not None
        url = self._url("chat/completions")
        try:
            resp = await self.http.send(self.http.build_request("POST", url, content=content, headers=self._headers()),
                                        stream=True)
        except httpx.HTTPError as exc:
            raise upstream_error(exc) from None
        if resp.status_code >= 400:
            data = await resp.aread()
            await resp.aclose()
            if resp.status_code >= 500:
                raise _status_error(url, resp.status_code, data)
            return Response(data, resp.status_code, media_type=resp.headers.get("content-type"))
        return StreamingResponse(_relay(resp), resp.status_code, media_type=resp.headers.get("content-type"),
                                 background=BackgroundTask(resp.aclose))


def _given(value: float | None, default: float) -> float:
    return default if value is None else value


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or ProxyError(413) as soon as it (or its declared length) passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ProxyError(413, f"the request body is over the limit of {limit} bytes", "invalid_request_error")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProxyError(413, f"the request body is over the limit of {limit} bytes", "invalid_request_error")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(raw: bytes) -> dict[str, Any]:
    """A chat request body as a JSON object, or ProxyError(400) saying why it is not one."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProxyError(400, f"the body is not UTF-8: {exc}", "invalid_request_error") from None
    except json.JSONDecodeError as exc:
        raise ProxyError(400, f"the body is not JSON: {exc}", "invalid_request_error") from None
    except RecursionError:
        raise _too_deep() from None
    if value_depth(body, MAX_BODY_NESTING) > MAX_BODY_NESTING:
        raise _too_deep()
    if not isinstance(body, dict):
        raise ProxyError(400, "the body must be a JSON object", "invalid_request_error")
    return body


def _too_deep() -> ProxyError:
    return ProxyError(400, f"the body nests deeper than {MAX_BODY_NESTING} levels", "invalid_request_error")


def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Routing errors (unknown path, wrong method) in the OpenAI error shape, like every other error."""
    error = ProxyError(exc.status_code, str(exc.detail), "invalid_request_error")
    response = error.response()
    response.headers.update(exc.headers or {})
    return response


async def _relay(resp: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for part in resp.aiter_raw():
            yield part
    except httpx.HTTPError as exc:  # the status line is already sent: end the stream, log why
        log.warning("upstream stream from %s broke off: %s", resp.request.url, exc)


def create_app(upstream: str, token: str | None = None, default_k: int = 4, rounds: int = 1,
               **settings: Any) -> FastAPI:
    """The proxy as a FastAPI app; `settings` are the other ProxySettings fields (summary_upstream, timeout, ...)."""
    proxy = HeavyProxy(ProxySettings(upstream=upstream, token=token, default_k=default_k, rounds=rounds, **settings))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        proxy.http = httpx.AsyncClient(timeout=proxy.settings.timeout)
        try:
            yield
        finally:
            await proxy.http.aclose()
            proxy.close_policies()

    async def authorize(request: Request) -> None:
        if proxy.settings.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = proxy.settings.token.encode()
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), expected):
            raise ProxyError(401, "missing or wrong API key: send 'Authorization: Bearer <token>'",
                             "invalid_request_error", "invalid_api_key")

    docs = {} if proxy.settings.token is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="toolgym heavy-thinking proxy", lifespan=lifespan, dependencies=[Depends(authorize)], **docs)
    app.state.proxy = proxy
    app.add_exception_handler(ProxyError, lambda _request, exc: exc.response())
    app.add_exception_handler(StarletteHTTPException, _http_error)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        raw = await read_body(request, proxy.settings.max_body_bytes)
        body = parse_body(raw)
        heavy = heavy_request(body, proxy.settings)
        if heavy is None:
            if "heavy" in body:  # "heavy": false / null is ours to consume, not the upstream's
                body.pop("heavy")
                raw = json.dumps(body).encode()
            if body.get("stream"):
                return await proxy.forward_stream(raw)
            resp = await proxy.forward("POST", "chat/completions", raw)
            return Response(resp.content, resp.status_code, media_type=resp.headers.get("content-type"))
        model, k, n_rounds = heavy
        result = await run_in_threadpool(proxy.think, body, model, k, n_rounds)
        answer = completion_body(result, body["model"], k, n_rounds, model)
        if body.get("stream"):
            return StreamingResponse(stream_events(answer), media_type="text/event-stream")
        return JSONResponse(answer)

    @app.get("/v1/models")
    async def models() -> Response:
        resp = await proxy.forward("GET", "models")
        if resp.status_code >= 400:
            return Response(resp.content, resp.status_code, media_type=resp.headers.get("content-type"))
        try:
            listing = resp.json()
        except ValueError:
            listing = None
        if not isinstance(listing, dict) or not isinstance(listing.get("data", []), list):
            raise _status_error(proxy._url("models"), resp.status_code, b"not a model listing: " + resp.content)
        upstream = [m for m in listing.get("data", []) if isinstance(m, dict) and "id" in m]
        heavy = [{**m, "id": f"heavy/{m['id']}", "owned_by": "toolgym-heavy"} for m in upstream]
        return JSONResponse({**listing, "data": upstream + heavy})

    return app


def serve(upstream: str, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **app_args: Any) -> None:
    """Run the proxy with uvicorn until interrupted (binds to 127.0.0.1 unless told otherwise)."""
    import uvicorn

    uvicorn.run(create_app(upstream, **app_args), host=host, port=port, log_level=log_level)
