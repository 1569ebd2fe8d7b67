"""A small OpenAI-compatible server for the remote backend's tests: ``http.server`` in a thread.

It speaks the shape every OpenAI-compatible server speaks (``GET /v1/models``,
``POST /v1/chat/completions`` with ``stream: true`` as Server-Sent Events
ending in ``data: [DONE]``, errors as ``{"error": {"message": ...}}``), so a
test against it shows the client works against servers other than ours. It
records each request (body and headers) and whether a client hung up mid-stream.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Script:
    """What the server answers."""

    model: str = "fake-org/fake-vl-7b-chat"
    others: list[str] = field(default_factory=list)  # more models /v1/models lists after ``model``
    chunks: list[str] = field(default_factory=lambda: ["Hel", "lo", " there"])
    finish: str = "stop"
    usage: bool = True  # a last event with usage, when the client asks for it
    delay: float = 0.0  # seconds between chunks
    api_key: str | None = None  # required Bearer token, if any
    status: int = 200  # another status answers every chat request with an OpenAI error body
    error: str = "something went wrong"
    wait: float = 0.0  # seconds before answering at all (a request waiting in the server's queue)
    truncate: bool = False  # hang up after the chunks, with no finish reason and no [DONE]
    raw: list[bytes] | None = None  # written as they are instead of the chunks: any bytes a broken server sends
    forever: bytes | None = None  # then written again and again until the client hangs up


class FakeOpenAI:
    def __init__(self, script: Script | None = None, port: int = 0) -> None:
        self.script = script or Script()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.sent = 0  # chunks written in the last stream
        self.hung_up = threading.Event()  # a client closed the stream before its end
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                key = fake.script.api_key
                if key is None or self.headers.get("Authorization") == f"Bearer {key}":
                    return True
                self._json(401, {"error": {"message": "invalid API key", "type": "invalid_request_error"}})
                return False

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                if self.path == "/v1/models":
                    names = [fake.script.model, *fake.script.others]
                    self._json(200, {"object": "list", "data": [{"id": name, "object": "model"} for name in names]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                fake.requests.append(body)
                fake.headers.append(dict(self.headers))
                if not self._authorized():
                    return
                script = fake.script
                time.sleep(script.wait)
                if script.status != 200:
                    self._json(script.status, {"error": {"message": script.error, "type": "server_error"}})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                fake.sent = 0
                if script.raw is not None:
                    self._raw(script.raw, script.forever)
                    return
                base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": script.model}
                try:
                    for i, text in enumerate(script.chunks):
                        last = i == len(script.chunks) - 1
                        finish = script.finish if last and not script.truncate else None
                        choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
                        self._event({**base, "choices": [choice]})
                        fake.sent += 1
                        if script.delay:
                            time.sleep(script.delay)
                    if script.truncate:
                        return
                    if script.usage and (body.get("stream_options") or {}).get("include_usage"):
                        n = len(script.chunks)
                        self._event({**base, "choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": n,
                                                                      "total_tokens": 21 + n}})
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    fake.hung_up.set()

            def _raw(self, parts: list[bytes], forever: bytes | None) -> None:
                try:
                    for part in parts:
                        self.wfile.write(part)
                        self.wfile.flush()
                        fake.sent += 1
                    while forever is not None:
                        self.wfile.write(forever)
                        self.wfile.flush()
                        fake.sent += 1
                except (BrokenPipeError, ConnectionResetError):
                    fake.hung_up.set()

            def _event(self, event: dict[str, Any]) -> None:
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
