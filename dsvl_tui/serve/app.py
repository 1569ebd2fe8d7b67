"""The FastAPI application: OpenAI's chat-completions API in front of one engine.

``create_app(backend, api_key=..., model_name=..., limits=...)`` serves
``POST /v1/chat/completions`` (streamed as Server-Sent Events or whole),
``GET /v1/models`` and ``GET /health`` (the one endpoint without the key: it
says only that the server is ready and how busy, never which model or from
where). Errors use OpenAI's error JSON; an engine error as an answer starts
maps to its status through one table (``ENGINE_ERRORS``). A client that
leaves while its request waits for the engine, or while a whole (not
streamed) answer is made, cancels it (``disconnect.unless_client_leaves``); a
streamed answer stops when its response sees the client go.
Requests are stateless: the engine is asked under one cache key and finds
the context it can reuse itself.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from dsvl_tui.serve.disconnect import unless_client_leaves
from dsvl_tui.serve.queue import GenerationQueue, Pump, QueueFull
from dsvl_tui.serve.requests import EngineRequest, Limits, RequestError, parse_request, to_engine
from engine.detokenize import StopStringFilter
from engine.errors import ContextOverflowError, EngineError, ImageError
from engine.types import ChatBackend

CACHE_KEY = "serve"  # one key for every request: the engine picks the stored context to reuse
RETRY_AFTER_SECONDS = 2
# The engine's refusals of a request as an answer starts, as (error classes, HTTP status, OpenAI's code):
# the first that matches wins, so a subclass comes before its base. Anything else is the server's fault.
ENGINE_ERRORS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int, str], ...] = (
    (ContextOverflowError, 400, "context_length_exceeded"),
    (ImageError, 400, "invalid_image"),
    ((EngineError, ValueError), 400, "invalid_value"),
)


def create_app(backend: ChatBackend, *, api_key: str | None = None, model_name: str | None = None,
               limits: Limits | None = None) -> FastAPI:
    """The server's application around ``backend``; ``api_key`` (if any) is required as a Bearer token."""
    limits = limits or Limits()
    name = model_name or backend.info.model_id
    # As many requests run as the engine decodes together (its --max-batch); a stand-in backend: one.
    places = getattr(backend, "max_batch", 1)
    queue = GenerationQueue(limits.queue_size, places if isinstance(places, int) and places >= 1 else 1)
    created = int(time.time())
    app = FastAPI(title="dsvl-chat", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.queue = queue
    stops_in_backend = takes_stop_strings(backend)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise RequestError(401, "no API key: send it as 'Authorization: Bearer KEY'", type="authentication_error",
                               code="missing_api_key")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise RequestError(401, "wrong API key: check the key given to dsvl-chat serve --api-key",
                               type="authentication_error", code="invalid_api_key")

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "method_not_allowed" if exc.status_code == 405 else None
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return JSONResponse(RequestError(exc.status_code, message, code=code).body(), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        message = f"the server failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        return JSONResponse(RequestError(500, message, type="server_error").body(), status_code=500)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        # No key needed, so nothing that identifies the model: its name may be a local path (a user's
        # home, a project's name). The server listens only once the model is loaded: up is ready.
        return {"status": "ready", "busy": queue.busy, "running": queue.running, "queued": queue.waiting,
                "max_batch": queue.places}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list",
                "data": [{"id": name, "object": "model", "created": created, "owned_by": "dsvl-chat"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        authorize(request)
        body = await read_body(request, limits.max_body_bytes, limits.body_seconds)
        chat = await run_in_threadpool(parse_request, body)  # 32 MiB of JSON takes a while: not on the loop
        del body
        if chat.model != name:
            raise RequestError(404, f"unknown model {chat.model!r}: this server serves {name!r} (see GET /v1/models)",
                               code="model_not_found")
        wanted = await run_in_threadpool(to_engine, chat, limits, backend.info)
        slot = await wait_for_engine(request, queue)
        cancel = threading.Event()
        try:
            # The engine ends the answer at a stop string itself, and generates no further; Answer's cut stays
            # for a backend that takes no stop strings (a remote client).
            stop = {"stop": wanted.stop} if wanted.stop and stops_in_backend else {}
            stream = await run_in_threadpool(backend.stream, wanted.messages, wanted.settings, system=wanted.system,
                                             cancel=cancel, cache_key=CACHE_KEY, **stop)
        except BaseException as exc:  # nothing runs on the engine: its place goes to the next request
            slot.release()
            refused = engine_refusal(exc)
            if refused is None:
                raise
            raise refused from None
        pump = Pump(stream, cancel, slot)
        answer = Answer(pump, wanted, name)
        if chat.stream:
            usage = bool(chat.stream_options and chat.stream_options.include_usage)
            return StreamingResponse(answer.events(usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                                     background=BackgroundTask(pump.close))
        try:  # a client that leaves cancels the answer: the engine stops within one token
            return JSONResponse(await unless_client_leaves(request, answer.whole()))
        finally:
            pump.close()

    return app


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The request body, or 413 as soon as it is known to be over ``limit`` bytes, or 408 after ``seconds``.

    The deadline is for the whole body: a client that sends a byte every few seconds never trips a
    timeout between reads, and would hold its connection (and memory) for ever."""
    too_large = RequestError(413, f"the request body is over {limit // (1024 * 1024)} MiB, this server's limit; "
                             "send smaller or fewer images", code="request_too_large")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large

    async def whole() -> bytes:
        parts: list[bytes] = []
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise too_large
            parts.append(part)
        return b"".join(parts)

    try:
        return await asyncio.wait_for(whole(), seconds)
    except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11
        raise RequestError(408, f"the request body did not arrive within {seconds:g} s; send it at once",
                           code="request_timeout", headers={"Connection": "close"}) from None


def engine_refusal(exc: BaseException) -> RequestError | None:
    """The client's error for an engine error raised as an answer starts (``ENGINE_ERRORS``), or None: a
    failure that is no fault of the request (the handler re-raises it: 500)."""
    for kinds, status, code in ENGINE_ERRORS:
        if isinstance(exc, kinds):
            return RequestError(status, str(exc), code=code)
    return None


async def wait_for_engine(request: Request, queue: GenerationQueue) -> Any:
    """The engine's slot, in arrival order; 503 if the queue is full; leaves the queue if the client goes."""
    try:
        return await unless_client_leaves(request, queue.acquire())
    except QueueFull:
        raise RequestError(503, f"the server is busy: {queue.size} requests are already waiting; "
                           f"retry in {RETRY_AFTER_SECONDS} s", type="server_busy", code="queue_full",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None


def takes_stop_strings(backend: ChatBackend) -> bool:
    """Whether ``backend.stream`` takes ``stop=`` (``Engine.stream`` does)."""
    try:
        parameters = inspect.signature(backend.stream).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "stop" or p.kind is p.VAR_KEYWORD for p in parameters)


class Answer:
    """One answer in OpenAI's shapes: SSE chunks or one chat.completion object."""

    def __init__(self, pump: Pump, wanted: EngineRequest, model: str):
        self.pump = pump
        self.cut = StopStringFilter(wanted.stop)
        self.model = model
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    async def texts(self) -> AsyncIterator[str]:
        """The answer's text, cut at a stop string (the generation is then cancelled)."""
        async for chunk in self.pump.chunks():  # after a stop string, the token or so left drains to final stats
            text = self.cut.push(chunk)
            if self.cut.stopped:
                self.pump.cancel.set()
            if text:
                yield text
        rest = self.cut.flush()
        if rest:
            yield rest

    def finish_reason(self) -> str:
        reason = self.pump.stream.stats.stop_reason
        return "length" if reason == "length" and not self.cut.stopped else "stop"

    def usage(self) -> dict[str, int]:
        stats = self.pump.stream.stats
        return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.new_tokens,
                "total_tokens": stats.prompt_tokens + stats.new_tokens}

    def _chunk(self, delta: dict[str, Any], finish: str | None, usage: bool) -> str:
        body: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage:
            body["usage"] = None
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def events(self, usage: bool) -> AsyncIterator[str]:
        try:
            yield self._chunk({"role": "assistant", "content": ""}, None, usage)
            async for text in self.texts():
                yield self._chunk({"content": text}, None, usage)
            if self.pump.error is not None:
                error = RequestError(500, self.pump.error, type="server_error", code="generation_failed")
                yield f"data: {json.dumps(error.body(), ensure_ascii=False)}\n\n"
            else:
                yield self._chunk({}, self.finish_reason(), usage)
                if usage:
                    body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model, "choices": [], "usage": self.usage()}
                    yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            self.pump.close()  # the client left (or the answer ended): the engine stops within one token

    async def whole(self) -> dict[str, Any]:
        text = "".join([part async for part in self.texts()])
        if self.pump.error is not None:
            raise RequestError(500, self.pump.error, type="server_error", code="generation_failed")
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": self.finish_reason()}],
            "usage": self.usage(),
        }


__all__ = ["CACHE_KEY", "ENGINE_ERRORS", "create_app", "engine_refusal"]
