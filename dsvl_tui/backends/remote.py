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
server next writes (within one chunk), which stops its generation. A server
that cannot be reached, a timeout or an HTTP error is a one-line
``RemoteError`` raised by ``stream`` before anything is generated, so nothing
is recorded and the next message simply tries again; a stream that breaks
part way raises ``RemoteStreamError`` (a ``GenerationError``: the partial
answer is kept with the error). What the server sends is untrusted:
the stream (``remote_stream.RemoteStream``) bounds and checks it (see
``remote_events``), and what is read here (the model list, an error body) is
read up to a bound and checked too. The API key goes in the
``Authorization: Bearer`` header and nowhere else; ``public_url`` is the
endpoint as shown and stored, without credentials. An ``internal`` server
(the one ``dsvl-chat web`` starts on a random loopback port for its tabs) is
neither shown nor stored: its address means nothing outside this run, so
messages call it "the model server" and transcripts record no endpoint.

Until the server has answered ``/v1/models`` (``known``), the model is not
known and ``info.model_id`` is empty; ``problem`` is why the last try failed
(``remote_probe.watch`` tries again until it answers).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from dsvl_tui.backends.image_urls import DataUrlCache
from dsvl_tui.backends.remote_events import RemoteError, RemoteStreamError, error_message, reason
from dsvl_tui.backends.remote_stream import ERROR_BYTES, MAX_CHARS_PER_TOKEN, RemoteStream, head
from dsvl_tui.core.stats import MAX_COUNT
from dsvl_tui.core.text import error_line
from engine.types import EngineInfo, GenerationSettings, Message

__all__ = ["MAX_CHARS_PER_TOKEN", "RemoteBackend", "RemoteError", "RemoteStreamError", "public_url"]

CONNECT_TIMEOUT = 10.0  # seconds to open a connection
READ_TIMEOUT = 300.0  # seconds the server may stay silent (a long queue, a slow first token)
_MODELS_BYTES = 4 * 2**20  # of /v1/models: a list of model names
_MODEL_ID_CHARS = 256  # a model's name, stored in transcripts and shown in the status bar
_HEALTH_BYTES = 64 * 2**10  # of /health: a few counts
_HEALTH_SECONDS = 5.0  # /health is optional: a server that does not answer it soon decodes one answer at a time
MAX_PLACES = 64  # the most answers one front end runs at once on a server, whatever it says it decodes together


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

    remote = True  # answers through a server (``choose.note_backend`` records which)

    def __init__(self, endpoint: str, *, api_key: str | None = None, model: str | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                 internal: bool = False) -> None:
        url = _base_url(endpoint)
        self.url = public_url(url)  # where requests go
        self.endpoint = "" if internal else self.url  # shown in the status bar and stored in transcripts
        self.where = self.endpoint or "the model server"  # how messages name the server
        parts = urlsplit(url)
        # A user name and password in the URL are HTTP Basic credentials, unless an API key is given.
        auth = (unquote(parts.username or ""), unquote(parts.password or "")) \
            if parts.username is not None and not api_key else None
        self._wanted = model  # used if the server serves it, else the server's first model
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(base_url=self.url, headers=headers, trust_env=False, auth=auth,
                                    timeout=httpx.Timeout(read_timeout, connect=connect_timeout))
        self.info: EngineInfo = self._describe("", {})
        """The server's model, as far as it is known (``refresh`` asks the server); no name until then."""
        self.known = False  # True once the server has said which model it serves
        self.problem = ""  # why the last ``refresh`` failed ("" once it succeeded)
        self.served: list[str] = []  # the names of the models the server listed last
        self.max_batch = 1  # answers the server decodes together, where it says so (``refresh``)
        self._entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._data_urls = DataUrlCache()

    # -- info ------------------------------------------------------------------------------

    def refresh(self, timeout: float | None = None) -> EngineInfo:
        """Ask the server which models it serves (``GET /v1/models``, within ``timeout`` seconds if given) and
        take the one asked for, else its first; raises ``RemoteError`` (kept in ``problem``)."""
        try:
            body = self._json(self._request("GET", "/v1/models", _MODELS_BYTES, timeout))
            models = [m for m in body.get("data", []) if isinstance(m, dict) and _model_id(m.get("id"))] \
                if isinstance(body, dict) and isinstance(body.get("data"), list) else []
            if not models:
                raise RemoteError(f"{self.where} lists no models at /v1/models; is it an OpenAI-compatible server?")
        except RemoteError as exc:
            self.problem = str(exc)
            raise
        with self._lock:
            self._entries, self.served, self.problem = models, [m["id"] for m in models], ""
            self._take(self._wanted)
        self.max_batch = self._places(timeout)
        return self.info

    def _places(self, timeout: float | None) -> int:
        """How many answers the server decodes together where it says so (``dsvl-chat serve``'s ``/health``
        has ``max_batch``); 1 for a server that does not, or sends anything else (it is untrusted: bounded)."""
        try:
            body = self._json(self._request("GET", "/health", _HEALTH_BYTES, min(timeout or _HEALTH_SECONDS,
                                                                                   _HEALTH_SECONDS)))
        except RemoteError:
            return 1
        places = body.get("max_batch") if isinstance(body, dict) else None
        return min(places, MAX_PLACES) if isinstance(places, int) and _count(places) else 1

    def choose(self, model_id: str) -> bool:
        """Answer with ``model_id`` from now on, if the server listed it at the last ``refresh``; False if not."""
        with self._lock:
            if model_id not in self.served:
                return False
            self._wanted = model_id
            self._take(model_id)
        return True

    def _take(self, wanted: str | None) -> None:
        chosen = next((m for m in self._entries if m["id"] == wanted), self._entries[0])
        self.info, self.known = self._describe(chosen["id"], chosen), True

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

    def _request(self, method: str, path: str, limit: int, timeout: float | None = None) -> bytes:
        """The body of a request's answer, at most ``limit`` bytes; raises ``RemoteError``."""
        request = self._client.build_request(method, path) if timeout is None else \
            self._client.build_request(method, path, timeout=httpx.Timeout(timeout))
        response = self._send(request, stream=True)
        try:
            if response.status_code >= 400:
                raise RemoteError(self._http_error(response, head(response, ERROR_BYTES)))
            body = head(response, limit)
        except httpx.HTTPError as exc:
            raise RemoteError(f"request to {self.where} failed: {reason(exc)}") from None
        finally:
            response.close()
        if len(body) > limit:
            raise RemoteError(f"{self.where} sent more than {limit >> 20} MiB for {path}; "
                              "is it an OpenAI-compatible server?")
        return body

    def _send(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        try:
            return self._client.send(request, stream=stream)
        except httpx.ConnectTimeout:
            raise RemoteError(f"cannot reach {self.where}: timed out connecting; is the server running?") from None
        except httpx.TimeoutException:
            raise RemoteError(f"{self.where} did not answer in time; try again") from None
        except httpx.ConnectError as exc:
            raise RemoteError(f"cannot reach {self.where}: {reason(exc)}; is the server running?") from None
        except httpx.HTTPError as exc:
            raise RemoteError(f"request to {self.where} failed: {reason(exc)}") from None

    def _json(self, body: bytes) -> Any:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise RemoteError(f"{self.where} answered with something that is not JSON; "
                              "is it an OpenAI-compatible server?") from None

    def _http_error(self, response: httpx.Response, body: bytes) -> str:
        message = _error_message(body) or error_line(response.reason_phrase) or "error"
        hint = "; check --api-key" if response.status_code == 401 else ""
        return f"{self.where} refused the request (HTTP {response.status_code}): {message}{hint}"


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
