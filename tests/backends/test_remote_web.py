"""The app of ``dsvl-chat web`` (issue 26, item 7): its model server is internal, on a port of this run only, so
the status bar names the model, not ``http://127.0.0.1:PORT``, and transcripts (``/save``, the journal, downloads)
record no endpoint; errors call it "the model server"."""

from __future__ import annotations

import json
import socket

import pytest
from fake_openai import FakeOpenAI
from tui_support import notices, run_async, screen_text, type_line, wait_for

from dsvl_tui.core.options import Options
from dsvl_tui.tui.app import DsvlApp


@pytest.mark.slow
def test_the_status_bar_and_the_saved_conversation_name_the_model_not_the_internal_server(web_mode, tmp_path):
    saved = tmp_path / "chat.json"

    @run_async
    async def drive() -> None:
        with FakeOpenAI() as server:
            app = DsvlApp(Options(endpoint=server.url))
            app.deliver_binary = lambda *args, **kwargs: None  # the download itself: test_web_mode's
            app.deliver_text = lambda *args, **kwargs: None
            async with app.run_test(size=(140, 24)) as pilot:
                await wait_for(pilot, lambda: app.status.state == "ready", timeout=30)
                assert app.status.model == "fake-org/fake-vl-7b-chat" and app.status.device == ""
                await type_line(pilot, "hello")
                await wait_for(pilot, lambda: len(app.active.conversation.messages) == 2, timeout=30)
                await type_line(pilot, f"/save {saved}")
                await wait_for(pilot, saved.exists)
                assert server.url not in screen_text(app) and f":{server.port}" not in screen_text(app)

    drive()
    document = json.loads(saved.read_text())
    assert document["model"] == "fake-org/fake-vl-7b-chat" and "endpoint" not in document


@pytest.mark.slow
def test_a_model_server_that_is_down_is_called_the_model_server(web_mode):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    @run_async
    async def drive() -> None:
        app = DsvlApp(Options(endpoint=f"http://127.0.0.1:{port}"))
        async with app.run_test(size=(140, 24)) as pilot:
            await wait_for(pilot, lambda: app.status.state == "not connected", timeout=30)
            assert app.status.detail.startswith("cannot reach the model server: connection refused")
            assert all(str(port) not in notice for notice in notices(app))

    drive()
