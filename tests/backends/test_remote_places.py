"""How many answers the app runs at once on a model server: as many as it says it decodes together.

``dsvl-chat serve`` says so in ``/health`` (``max_batch``); any other server
is asked one answer at a time, and what a server says is bounded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fake_openai import FakeOpenAI

from dsvl_tui.backends.remote import MAX_PLACES, RemoteBackend


def test_a_server_without_health_is_asked_one_answer_at_a_time() -> None:
    with FakeOpenAI() as fake:  # /health is 404
        backend = RemoteBackend(fake.url)
        backend.refresh()
        assert backend.known and backend.max_batch == 1


class _Health(BaseHTTPRequestHandler):
    health: Any = None

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = {"object": "list", "data": [{"id": "m", "object": "model"}]} if self.path == "/v1/models" \
            else self.health
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def health_server() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("health", "places"), [
    ({"max_batch": 4}, 4), ({"max_batch": 10**9}, MAX_PLACES), ({"max_batch": True}, 1), ({"max_batch": 0}, 1),
    ({"max_batch": "8"}, 1), ([4], 1), ("ok", 1),
])
def test_what_a_server_says_it_decodes_together_is_checked_and_bounded(health_server: Any, health: Any,
                                                                         places: int) -> None:
    _Health.health = health
    backend = RemoteBackend(f"http://127.0.0.1:{health_server.server_address[1]}")
    backend.refresh()
    assert backend.max_batch == places


def test_the_apps_tabs_on_a_batching_serve_answer_together(tiny_siglip: Any) -> None:
    pytest.importorskip("fastapi")
    from tui_support import ready, run_async

    import engine
    from dsvl_tui.core.options import Options
    from dsvl_tui.serve.app import create_app
    from dsvl_tui.tui.app import DsvlApp
    from tests.serve.conftest import running_server

    eng = engine.load(str(tiny_siglip), device="cpu", max_batch=2)

    @run_async
    async def drive(url: str) -> None:
        app = DsvlApp(Options(endpoint=url))
        async with app.run_test() as pilot:
            await ready(pilot)
            assert app.queue.places == 2

    with running_server(create_app(eng, model_name="tiny")) as url:
        drive(url)
