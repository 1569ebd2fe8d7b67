"""A model on a server: ``RemoteBackend`` speaks OpenAI's chat-completions API over HTTP.

``dsvl-chat --endpoint URL`` (and ``--plain``, ``ask``) answers through a
server instead of a local engine: ``dsvl-chat serve`` or any other
OpenAI-compatible server (lmdeploy's ``api_server``, ...). ``RemoteBackend``
implements ``engine.ChatBackend``: ``stream`` posts the conversation to
``/v1/chat/completions`` with ``stream: true`` and yields the text of each
Server-Sent Event until ``data: [DONE]``; ``info`` comes from ``/v1/models``.

Images go as base64 ``data:`` URLs, read like ``/image`` reads them (only
regular files, the same pixel limit). The system prompt is a system message;
``top_k`` and ``repetition_penalty`` travel as extra fields, which servers
that do not know them ignore. Setting ``cancel`` ends the answer at once,
even while the server is silent, and the connection is closed when the
server next writes (within one chunk), which stops its generation. A server that cannot be reached, a timeout or an HTTP error is a
one-line ``RemoteError`` raised by ``stream`` before anything is generated,
so nothing is recorded and the next message simply tries again; a stream that
breaks part way raises ``RemoteStreamError`` (a ``GenerationError``: the
partial answer is kept with the error). The API key goes in the
``Authorization: Bearer`` header and nowhere else; ``public_url`` is the
endpoint as shown and stored, without credentials.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from dsvl_tui.image_urls import DataUrlCache
from engine.errors import EngineError, GenerationError
from engine.types import EngineInfo, GenerationSettings, GenerationStats, Message, StopReason

__all__ = ["RemoteBackend", "RemoteError", "RemoteStreamError", "public_url"]

CONNECT_TIMEOUT = 10.0  # seconds to open a connection
READ_TIMEOUT = 300.0  # seconds the server may stay silent (a long queue, a slow first token)
_POLL_SECONDS = 0.05  # how often a reader waiting for the server looks at ``cancel``
_FINISH: dict[str, StopReason] = {"stop": "eos", "length": "length", "cancelled": "cancelled", "abort": "cancelled"}


class RemoteError(EngineError):
    """The server could not be reached, timed out or refused the request; ``str()`` is one line."""


class RemoteStreamError(GenerationError):
    """The answer's stream broke part way (the connection dropped, the server sent an error)."""


def public_url(url: str) -> str:
    """``url`` without user name, password, query or fragment: what may be shown and stored."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _base_url(endpoint: str) -> str:
    """The server's root for ``endpoint``: ``http://h:p``, ``http://h:p/`` and ``http://h:p/v1`` are one server."""
    text = endpoint.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemoteError(f"endpoint {public_url(text)!r} is not an http(s) URL; give one like http://127.0.0.1:8000")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class RemoteBackend:
    """A client of an OpenAI-compatible server, standing in for the local engine."""

    def __init__(self, endpoint: str, *, api_key: str | None = None, model: str | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT) -> None:
        url = _base_url(endpoint)
        self.endpoint = public_url(url)  # shown in the status bar and stored in transcripts
        parts = urlsplit(url)
        # A user name and password in the URL are HTTP Basic credentials, unless an API key is given.
        auth = (unquote(parts.username or ""), unquote(parts.password or "")) \
            if parts.username is not None and not api_key else None
        self._wanted = model  # used if the server serves it, else the server's first model
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(base_url=self.endpoint, headers=headers, trust_env=False, auth=auth,
                                    timeout=httpx.Timeout(read_timeout, connect=connect_timeout))
        self.info: EngineInfo = self._describe(model or "", {})
        """The server's model, as far as it is known (``refresh`` asks the server)."""
        self.known = False  # True once the server has said which model it serves
        self._lock = threading.Lock()
        self._data_urls = DataUrlCache()

    # -- info ------------------------------------------------------------------------------

    def refresh(self) -> EngineInfo:
        """Ask the server which model it serves (``GET /v1/models``); raises ``RemoteError``."""
        body = self._json(self._request("GET", "/v1/models"))
        models = [m for m in body.get("data", []) if isinstance(m, dict) and isinstance(m.get("id"), str)] \
            if isinstance(body, dict) and isinstance(body.get("data"), list) else []
        if not models:
            raise RemoteError(f"{self.endpoint} lists no models at /v1/models; is it an OpenAI-compatible server?")
        chosen = next((m for m in models if m["id"] == self._wanted), models[0])
        with self._lock:
            self.info, self.known = self._describe(chosen["id"], chosen), True
        return self.info

    def _describe(self, model_id: str, entry: dict[str, Any]) -> EngineInfo:
        window = next((entry[k] for k in ("context_length", "max_model_len") if isinstance(entry.get(k), int)), 0)
        return EngineInfo(model_id=model_id, variant="chat", tower="remote", device=self.endpoint, dtype="",
                          parameters=0, context_length=window, path=self.endpoint)

    def close(self) -> None:
        self._client.close()

    # -- answers ---------------------------------------------------------------------------

    def stream(self, messages: Sequence[Message], settings: GenerationSettings, *, system: str | None = None,
               cancel: Any = None, cache_key: str = "default") -> RemoteStream:
        """Send the conversation and return its answer's stream; raises ``RemoteError`` or ``ImageError`` first.

        ``cache_key`` is not sent: the server finds the cached prefix itself.
        """
        start = time.monotonic()
        if not self.known:
            self.refresh()
        payload = self.payload(messages, settings, system=system)
        request = self._client.build_request("POST", "/v1/chat/completions", json=payload,
                                             headers={"Accept": "text/event-stream"})
        stream = RemoteStream(self, request, cancel, start)
        stream.wait_open()
        return stream

    def payload(self, messages: Sequence[Message], settings: GenerationSettings, *,
                system: str | None = None) -> dict[str, Any]:
        """The request body for ``messages`` (OpenAI's shape, images as data URLs)."""
        wire: list[dict[str, Any]] = []
        if system:
            wire.append({"role": "system", "content": system})
        for message in messages:
            if message.images:
                parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": self._data_urls.url(image)}}
                                               for image in message.images]
                parts.append({"type": "text", "text": message.text})
                wire.append({"role": message.role, "content": parts})
            else:
                wire.append({"role": message.role, "content": message.text})
        body: dict[str, Any] = {
            "model": self.info.model_id, "messages": wire, "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": settings.temperature, "top_p": settings.top_p, "max_tokens": settings.max_new_tokens,
            "top_k": settings.top_k, "repetition_penalty": settings.repetition_penalty,
        }
        if settings.seed is not None:
            body["seed"] = settings.seed
        if settings.ignore_eos:
            body["ignore_eos"] = True  # vLLM's extra field, which dsvl-chat serve takes too (benchmarks)
        return body

    # -- HTTP --------------------------------------------------------------------------------

    def _request(self, method: str, path: str) -> httpx.Response:
        response = self._send(self._client.build_request(method, path), stream=False)
        if response.status_code >= 400:
            raise RemoteError(self._http_error(response))
        return response

    def _send(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        try:
            return self._client.send(request, stream=stream)
        except httpx.ConnectTimeout:
            raise RemoteError(f"cannot reach {self.endpoint}: timed out connecting; is the server running?") from None
        except httpx.TimeoutException:
            raise RemoteError(f"{self.endpoint} did not answer in time; try again") from None
        except httpx.ConnectError as exc:
            raise RemoteError(f"cannot reach {self.endpoint}: {_reason(exc)}; is the server running?") from None
        except httpx.HTTPError as exc:
            raise RemoteError(f"request to {self.endpoint} failed: {_reason(exc)}") from None

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise RemoteError(f"{self.endpoint} answered with something that is not JSON; "
                              "is it an OpenAI-compatible server?") from None

    def _http_error(self, response: httpx.Response) -> str:
        message = _error_message(response.content) or response.reason_phrase or "error"
        hint = "; check --api-key" if response.status_code == 401 else ""
        return f"{self.endpoint} refused the request (HTTP {response.status_code}): {message}{hint}"


class RemoteStream:
    """The text of one answer as the server streams it; ``stats`` are final when iteration ends.

    A thread reads the response and hands each line over through a queue, so
    the reader waits on the queue, not on the socket: setting ``cancel`` ends
    the iteration at once even while the server is silent (a request waiting
    in its queue, a long prefill). The thread then closes the connection when
    the server next writes, which tells the server to stop generating.
    """

    def __init__(self, backend: RemoteBackend, request: httpx.Request, cancel: Any, start: float) -> None:
        self._cancel = cancel
        self._start = start
        self._endpoint = backend.endpoint
        self._events: queue.Queue[tuple[str, str]] = queue.Queue()
        self._abandon = threading.Event()  # the reader is gone: the thread closes the response
        self._opened = False
        self.stats = GenerationStats()
        self._thread = threading.Thread(target=self._pump, args=(backend, request), daemon=True,
                                        name="dsvl-remote-stream")
        self._thread.start()

    def _pump(self, backend: RemoteBackend, request: httpx.Request) -> None:
        """The thread: send the request, then put each line of the response on the queue."""
        put = self._events.put
        try:
            response = backend._send(request, stream=True)
        except RemoteError as exc:
            put(("refused", str(exc)))
            return
        try:
            if response.status_code >= 400:
                response.read()
                put(("refused", backend._http_error(response)))
                return
            put(("open", ""))
            for line in response.iter_lines():
                if self._abandon.is_set():
                    return
                put(("line", line))
            put(("end", ""))
        except httpx.TimeoutException:
            put(("broken", f"{self._endpoint} stopped sending the answer (timed out)"))
        except httpx.HTTPError as exc:
            put(("broken", f"the connection to {self._endpoint} broke: {_reason(exc)}"))
        finally:
            response.close()

    def _next(self) -> tuple[str, str] | None:
        """The thread's next event, or None as soon as ``cancel`` is set."""
        while not self._cancelled():
            try:
                return self._events.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
        return None

    def wait_open(self) -> None:
        """Wait for the server to accept the request (or for ``cancel``); raises ``RemoteError`` if it does not."""
        event = self._next()
        if event is None:
            self._abandon.set()
            return
        kind, value = event
        if kind == "refused":
            raise RemoteError(value)
        self._opened = True

    def __iter__(self) -> Iterator[str]:
        stats = self.stats
        first: float | None = None
        chunks = 0
        usage: dict[str, Any] | None = None
        finish: str | None = None
        done = False
        try:
            while self._opened:
                event = self._next()
                if event is None:
                    finish = "cancelled"
                    break
                kind, line = event
                if kind == "broken":
                    raise RemoteStreamError(line)
                if kind == "end":
                    break
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    done = True
                    break
                event_body = _event(data)
                if "error" in event_body:
                    raise RemoteStreamError(f"{self._endpoint}: {_error_message(data.encode()) or 'error'}")
                if isinstance(event_body.get("usage"), dict):
                    usage = event_body["usage"]
                for choice in event_body.get("choices") or []:
                    if not isinstance(choice, dict):
                        continue
                    finish = choice.get("finish_reason") or finish
                    text = (choice.get("delta") or {}).get("content")
                    if isinstance(text, str) and text:
                        if first is None:
                            first = time.monotonic()
                            stats.time_to_first_token = first - self._start
                        chunks += 1
                        yield text
                        if self._cancelled():
                            finish = "cancelled"
                            return
            if self._opened and not done and finish is None and not self._cancelled():
                raise RemoteStreamError(f"{self._endpoint} closed the stream before the answer ended")
        finally:
            self._abandon.set()
            end = time.monotonic()
            stats.total_seconds = end - self._start
            if usage is not None:
                stats.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            counted = usage.get("completion_tokens") if usage is not None else None
            stats.new_tokens = counted if isinstance(counted, int) and finish != "cancelled" else chunks
            if first is not None and stats.new_tokens > 1 and end > first:
                stats.tokens_per_second = (stats.new_tokens - 1) / (end - first)
            stats.stop_reason = _FINISH.get(finish or "", "eos" if finish is None else "stop_string")
            if self._cancelled():
                stats.stop_reason = "cancelled"

    def _cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()


def _event(data: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError:
        raise RemoteStreamError("the server sent an event that is not JSON; is it an OpenAI-compatible server?") from None
    return event if isinstance(event, dict) else {}


def _error_message(content: bytes) -> str:
    """The message of an OpenAI error body (``{"error": {"message": ...}}``), FastAPI's ``detail``, or ''."""
    try:
        body = json.loads(content)
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    error = body.get("error", body.get("detail"))
    if isinstance(error, dict):
        error = error.get("message")
    return " ".join(str(error).split()) if error else ""


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "name resolution" in lowered:
        return "unknown host"
    return " ".join(text.split()) or type(exc).__name__
