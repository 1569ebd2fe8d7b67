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
from dsvl_tui.remote_events import (
    MAX_LINE_BYTES,
    LineTooLong,
    Notes,
    RemoteStreamError,
    bounded_lines,
    error_message,
    parse_event,
)
from dsvl_tui.stats import MAX_COUNT
from dsvl_tui.text import error_line
from engine.errors import EngineError
from engine.types import EngineInfo, GenerationSettings, GenerationStats, Message, StopReason

__all__ = ["RemoteBackend", "RemoteError", "RemoteStreamError", "public_url"]

CONNECT_TIMEOUT = 10.0  # seconds to open a connection
READ_TIMEOUT = 300.0  # seconds the server may stay silent (a long queue, a slow first token)
_POLL_SECONDS = 0.05  # how often a reader waiting for the server looks at ``cancel``
# The most characters one token of any model's vocabulary decodes to (the longest are runs of spaces or
# punctuation, a few dozen characters): an answer longer than max_new_tokens times this is cut there.
MAX_CHARS_PER_TOKEN = 128
_EXTRA_EVENTS = 16  # events beside one per token: the role, the finish reason, the usage
_QUEUED_LINES = 64  # lines read ahead of the reader: a fast server cannot fill memory
_ERROR_BYTES = 64 * 2**10  # of an error body: its message is shown cut to one line anyway
_MODELS_BYTES = 4 * 2**20  # of /v1/models: a list of model names
_MODEL_ID_CHARS = 256  # a model's name, stored in transcripts and shown in the status bar
_FINISH: dict[str, StopReason] = {"stop": "eos", "length": "length", "cancelled": "cancelled", "abort": "cancelled"}


class RemoteError(EngineError):
    """The server could not be reached, timed out or refused the request; ``str()`` is one line."""


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
        body = self._json(self._request("GET", "/v1/models", _MODELS_BYTES))
        models = [m for m in body.get("data", []) if isinstance(m, dict) and _model_id(m.get("id"))] \
            if isinstance(body, dict) and isinstance(body.get("data"), list) else []
        if not models:
            raise RemoteError(f"{self.endpoint} lists no models at /v1/models; is it an OpenAI-compatible server?")
        chosen = next((m for m in models if m["id"] == self._wanted), models[0])
        with self._lock:
            self.info, self.known = self._describe(chosen["id"], chosen), True
        return self.info

    def _describe(self, model_id: str, entry: dict[str, Any]) -> EngineInfo:
        window = next((entry[k] for k in ("context_length", "max_model_len") if _count(entry.get(k))), 0)
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
                                             headers={"Accept": "text/event-stream", "Accept-Encoding": "identity"})
        stream = RemoteStream(self, request, cancel, start, settings.max_new_tokens)
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

    def _request(self, method: str, path: str, limit: int) -> bytes:
        """The body of a request's answer, at most ``limit`` bytes; raises ``RemoteError``."""
        response = self._send(self._client.build_request(method, path), stream=True)
        try:
            if response.status_code >= 400:
                raise RemoteError(self._http_error(response, _head(response, _ERROR_BYTES)))
            body = _head(response, limit)
        except httpx.HTTPError as exc:
            raise RemoteError(f"request to {self.endpoint} failed: {_reason(exc)}") from None
        finally:
            response.close()
        if len(body) > limit:
            raise RemoteError(f"{self.endpoint} sent more than {limit >> 20} MiB for {path}; "
                              "is it an OpenAI-compatible server?")
        return body

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

    def _json(self, body: bytes) -> Any:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise RemoteError(f"{self.endpoint} answered with something that is not JSON; "
                              "is it an OpenAI-compatible server?") from None

    def _http_error(self, response: httpx.Response, body: bytes) -> str:
        message = _error_message(body) or error_line(response.reason_phrase) or "error"
        hint = "; check --api-key" if response.status_code == 401 else ""
        return f"{self.endpoint} refused the request (HTTP {response.status_code}): {message}{hint}"


class RemoteStream:
    """The text of one answer as the server streams it; ``stats`` are final when iteration ends.

    A thread reads the response and hands each line over through a small
    queue, so the reader waits on the queue, not on the socket: setting
    ``cancel`` ends the iteration at once even while the server is silent (a
    request waiting in its queue, a long prefill). The thread then closes the
    connection when the server next writes, which tells the server to stop
    generating.

    What the server sends is untrusted (see ``remote_events``): a line longer
    than ``MAX_LINE_BYTES``, or anything at all going wrong in the thread
    (``MemoryError`` included), ends the answer as a ``RemoteStreamError``
    after the text so far; a field that is not valid is dropped and said once
    in ``notes``. The answer stops at ``max_new_tokens``, counted by the
    server's events (one per token) and by ``MAX_CHARS_PER_TOKEN``, whatever
    the server does: the request is then cancelled, as by ``cancel``.
    """

    def __init__(self, backend: RemoteBackend, request: httpx.Request, cancel: Any, start: float,
                 max_new_tokens: int) -> None:
        self._cancel = cancel
        self._start = start
        self._endpoint = backend.endpoint
        self._max_tokens = max_new_tokens
        self._events: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=_QUEUED_LINES)
        self._abandon = threading.Event()  # the reader is gone: the thread closes the response
        self._opened = False
        self.stats = GenerationStats()
        self.notes: list[str] = []
        """One line for each kind of thing the server sent that was dropped or cut (see ``remote_events``)."""
        self._thread = threading.Thread(target=self._pump, args=(backend, request), daemon=True,
                                        name="dsvl-remote-stream")
        self._thread.start()

    def _put(self, event: tuple[str, str]) -> bool:
        """Queue ``event`` for the reader, waiting while the queue is full; False once the reader is gone."""
        while not self._abandon.is_set():
            try:
                self._events.put(event, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self, backend: RemoteBackend, request: httpx.Request) -> None:
        """The thread: send the request, then put each line of the response on the queue.

        It always ends with one last event ("end", "refused" or "broken"), whatever it meets.
        """
        try:
            self._read(backend, request)
        except BaseException as exc:  # noqa: BLE001 - MemoryError, a bug: the answer ends, the text so far kept
            try:
                self._put(("broken", f"reading the answer from {self._endpoint} failed ({type(exc).__name__})"))
            except BaseException:  # noqa: BLE001 - no memory even for that: the reader sees the thread gone
                pass

    def _read(self, backend: RemoteBackend, request: httpx.Request) -> None:
        try:
            response = backend._send(request, stream=True)
        except RemoteError as exc:
            self._put(("refused", str(exc)))
            return
        try:
            if response.status_code >= 400:
                self._put(("refused", backend._http_error(response, _head(response, _ERROR_BYTES))))
                return
            self._put(("open", ""))
            for line in bounded_lines(response.iter_bytes(), MAX_LINE_BYTES):
                if not self._put(("line", line)):
                    return
            self._put(("end", ""))
        except LineTooLong:
            self._put(("broken", f"{self._endpoint} sent a line longer than {MAX_LINE_BYTES >> 20} MiB; "
                                 "is it an OpenAI-compatible server?"))
        except httpx.TimeoutException:
            self._put(("broken", f"{self._endpoint} stopped sending the answer (timed out)"))
        except httpx.HTTPError as exc:
            self._put(("broken", f"the connection to {self._endpoint} broke: {_reason(exc)}"))
        finally:
            response.close()

    def _next(self) -> tuple[str, str] | None:
        """The thread's next event, or None as soon as ``cancel`` is set."""
        while not self._cancelled():
            try:
                return self._events.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not self._thread.is_alive():  # it ended without a last event (it ran out of memory)
                    try:
                        return self._events.get_nowait()
                    except queue.Empty:
                        return "broken", f"reading the answer from {self._endpoint} failed"
        return None

    def wait_open(self) -> None:
        """Wait for the server to accept the request (or for ``cancel``); raises ``RemoteError`` if it does not."""
        event = self._next()
        if event is None:
            self._abandon.set()
            return
        kind, value = event
        if kind in ("refused", "broken"):
            self._abandon.set()
            raise RemoteError(value)
        self._opened = True

    def __iter__(self) -> Iterator[str]:
        stats, notes = self.stats, Notes()
        first: float | None = None
        chunks = events = chars = 0
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        finish: str | None = None
        done = overrun = False
        max_chars = self._max_tokens * MAX_CHARS_PER_TOKEN
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
                events += 1
                if events > self._max_tokens + _EXTRA_EVENTS:  # an endless stream of events without text
                    overrun = True
                    break
                parsed = parse_event(data, notes)
                if parsed.error is not None:
                    raise RemoteStreamError(f"{self._endpoint}: {parsed.error}")
                prompt_tokens = parsed.prompt_tokens if parsed.prompt_tokens is not None else prompt_tokens
                completion_tokens = parsed.completion_tokens if parsed.completion_tokens is not None \
                    else completion_tokens
                finish = parsed.finish or finish
                for text in parsed.texts:
                    room = max_chars - chars
                    if chunks >= self._max_tokens or room <= 0:
                        overrun = True
                        break
                    if len(text) > room:  # more characters than max_new_tokens of any tokenizer's tokens
                        text, overrun = text[:room], True
                    chars += len(text)
                    if first is None:
                        first = time.monotonic()
                        stats.time_to_first_token = first - self._start
                    chunks += 1
                    yield text
                    if self._cancelled():
                        finish = "cancelled"
                        return
                    if overrun:
                        break
                if overrun:
                    break
            if overrun:
                notes.add(f"{self._endpoint} went on past max_new_tokens ({self._max_tokens}); the answer stops there")
                finish = "length"
            elif self._opened and not done and finish is None and not self._cancelled():
                raise RemoteStreamError(f"{self._endpoint} closed the stream before the answer ended")
        finally:
            self._abandon.set()  # the thread closes the connection: the server stops generating
            end = time.monotonic()
            stats.total_seconds = end - self._start
            stats.prompt_tokens = prompt_tokens or 0
            if completion_tokens is not None and completion_tokens > self._max_tokens:
                notes.add(f"{self._endpoint} counted {completion_tokens} new tokens, more than max_new_tokens "
                          f"({self._max_tokens}); its count was dropped")
                completion_tokens = None
            counted = completion_tokens is not None and finish != "cancelled" and not overrun
            stats.new_tokens = completion_tokens if counted and completion_tokens is not None else chunks
            if first is not None and stats.new_tokens > 1 and end > first:
                stats.tokens_per_second = (stats.new_tokens - 1) / (end - first)
            stats.stop_reason = _FINISH.get(finish or "", "eos" if finish is None else "stop_string")
            if self._cancelled():
                stats.stop_reason = "cancelled"
            self.notes[:] = notes.lines

    def _cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()


def _head(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of a response's body (an error page, a model list): a server may send any amount."""
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > limit:
            break
    return bytes(data)


def _error_message(content: bytes) -> str:
    """The one-line message of an error body, or '' (see ``remote_events.error_message``)."""
    try:
        return error_message(json.loads(content))
    except (ValueError, RecursionError):
        return ""


def _model_id(value: Any) -> bool:
    """A model's name as a server lists it: short printable text (it is stored and shown)."""
    return isinstance(value, str) and 0 < len(value) <= _MODEL_ID_CHARS and value.isprintable()


def _count(value: Any) -> bool:
    """A context length a server states: a positive integer, not a boolean or a number beyond any window."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_COUNT


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "name resolution" in lowered:
        return "unknown host"
    return " ".join(text.split()) or type(exc).__name__
