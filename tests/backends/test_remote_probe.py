"""``--endpoint`` to a server that is down, then up; ``/model`` with a server (issue 26, items 4 and 5).

The app and the REPL probe the server at start: "not connected" with the
reason (never "ready" with a model the server never named), tried again on a
schedule (made fast here) until it answers, then ready with the server's
model. ``/model`` loads nothing with a server: it shows the server's models
and picks one it serves.
"""

from __future__ import annotations

import io
import socket
import threading
import time

import pytest
from fake_openai import FakeOpenAI, Script
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from dsvl_tui.backends import remote_probe
from dsvl_tui.backends.remote import RemoteBackend
from dsvl_tui.backends.remote_events import RemoteError
from dsvl_tui.core.options import Options
from dsvl_tui.repl.app import Repl


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(remote_probe, "RETRY_SECONDS", (0.05, 0.1))


# --- the probe --------------------------------------------------------------------------------------------------------


def test_the_schedule_is_said_in_words() -> None:
    assert remote_probe.schedule_text() == "after 1, 2, 4, 8 and 15 s, then every 30 s"
    assert remote_probe.schedule_text((5.0,)) == "every 5 s"


def test_watch_reports_each_failure_then_the_connection_once_the_server_answers(fast_retries) -> None:
    port = free_port()
    backend = RemoteBackend(f"http://127.0.0.1:{port}")
    with pytest.raises(RemoteError):
        backend.refresh(timeout=2)
    assert "connection refused" in backend.problem and not backend.known
    reports: list[remote_probe.Connection] = []
    done = threading.Event()
    thread = threading.Thread(target=lambda: (remote_probe.watch(backend, reports.append, threading.Event()),
                                              done.set()), daemon=True)
    thread.start()
    wait_until(lambda: len(reports) >= 3)
    assert all(not r.connected and "connection refused" in r.reason for r in reports[:3])
    assert [r.retry_in for r in reports[:3]] == [0.05, 0.1, 0.1]  # the last step repeats
    with FakeOpenAI(port=port):
        wait_until(done.is_set)
    assert reports[-1] == remote_probe.Connection(True)
    assert backend.known and backend.info.model_id == "fake-org/fake-vl-7b-chat" and backend.problem == ""


def test_watch_ends_when_told(fast_retries) -> None:
    backend = RemoteBackend(f"http://127.0.0.1:{free_port()}")
    stop = threading.Event()
    stop.set()
    assert remote_probe.watch(backend, lambda c: None, stop) is False


# --- the app ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_app_says_not_connected_with_the_reason_then_ready_when_the_server_comes_up(fast_retries) -> None:
    from tui_support import notices, run_async, wait_for

    from dsvl_tui.tui.app import DsvlApp

    port = free_port()
    url = f"http://127.0.0.1:{port}"

    @run_async
    async def drive() -> None:
        app = DsvlApp(Options(endpoint=url))
        async with app.run_test(size=(160, 24)) as pilot:
            await wait_for(pilot, lambda: app.status.state == "not connected", timeout=30)
            assert f"cannot reach {url}: connection refused" in app.status.detail
            assert "next try in" in app.status.detail
            assert app.status.model == ""  # not "deepseek-vl-1.3b-chat": the server has named no model
            said = notices(app, error=True)
            assert len(said) == 1 and "not connected" in said[0] and "then every 0.1 s" in said[0]
            with FakeOpenAI(port=port):
                await wait_for(pilot, lambda: app.status.state == "ready", timeout=30)
                assert app.status.model == "fake-org/fake-vl-7b-chat"
                assert app.active.conversation.model == "fake-org/fake-vl-7b-chat"
                assert any(n.startswith("connected to ") for n in notices(app, error=False))
                await pilot.pause(0.3)
                assert app.status.state == "ready"  # the tries have ended

    drive()


@pytest.mark.slow
def test_the_app_is_ready_at_once_when_the_server_answers() -> None:
    from tui_support import notices, run_async, wait_for

    from dsvl_tui.tui.app import DsvlApp

    @run_async
    async def drive() -> None:
        with FakeOpenAI() as server:
            app = DsvlApp(Options(endpoint=server.url))
            async with app.run_test(size=(160, 24)) as pilot:
                await wait_for(pilot, lambda: app.status.state == "ready", timeout=30)
                assert app.status.model == "fake-org/fake-vl-7b-chat" and app.connection is not None
                assert notices(app) == []

    drive()


# --- the REPL ---------------------------------------------------------------------------------------------------------


def test_the_repl_says_not_connected_then_ready_with_the_servers_model(fast_retries) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out, err = io.StringIO(), io.StringIO()
    with create_pipe_input() as pipe:
        repl = Repl(Options(endpoint=url), input=pipe, output=DummyOutput(), stdout=out, stderr=err, colour=False)
        thread = threading.Thread(target=repl.run, daemon=True)
        thread.start()
        wait_until(lambda: "not connected" in err.getvalue())
        assert repl._prompt_text() == "[not connected] > "
        with FakeOpenAI(port=port):
            wait_until(lambda: "is ready" in err.getvalue())
            pipe.send_text("\x04")
            thread.join(30)
    text = err.getvalue()
    assert f"error: not connected: cannot reach {url}: connection refused; is the server running? " \
           "(trying again after 0.05 s, then every 0.1 s" in text
    assert f"connected: fake-org/fake-vl-7b-chat at {url} is ready" in text
    assert "deepseek-vl-1.3b-chat is ready" not in text  # the name the server never gave
    assert text.count("not connected") == 1  # said once, not at every try


@pytest.mark.timeout(60)
def test_the_repl_does_not_journal_a_message_the_dead_server_never_got() -> None:
    from dsvl_tui.storage.journal import Journal

    url = f"http://127.0.0.1:{free_port()}"
    out, err = io.StringIO(), io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text("hello\r\x15\x04")  # refused: back at the prompt; Ctrl+U clears it, Ctrl+D leaves
        repl = Repl(Options(endpoint=url), input=pipe, output=DummyOutput(), stdout=out, stderr=err, colour=False)
        assert repl.run() == 0
    assert "connection refused" in err.getvalue() and "your message is back at the prompt" in err.getvalue()
    assert Journal().recent() == []  # no conversation with a question and no answer in /resume
    with FakeOpenAI() as server, create_pipe_input() as pipe:  # one that is answered is journaled
        pipe.send_text("hello\r\x04")
        Repl(Options(endpoint=server.url), input=pipe, output=DummyOutput(), stdout=io.StringIO(),
             stderr=io.StringIO(), colour=False).run()
    assert [entry.title for entry in Journal().recent()] == ["hello"]


def run_piped(url: str, lines: str) -> tuple[Repl, str]:
    err = io.StringIO()
    repl = Repl(Options(endpoint=url), stdin=io.StringIO(lines), stdout=io.StringIO(), stderr=err, colour=False)
    repl.run()
    return repl, err.getvalue()


def test_model_with_a_server_lists_its_models_and_loads_nothing() -> None:
    with FakeOpenAI() as server:
        repl, err = run_piped(server.url, "/model\n/model deepseek-ai/deepseek-vl-7b-chat\n")
    assert f"model: fake-org/fake-vl-7b-chat, served by {server.url}, which chooses it" in err
    assert f"error: {server.url} chooses the model and serves only fake-org/fake-vl-7b-chat: /model NAME picks " \
           "one of those" in err
    assert "loading" not in err and repl._slot.loading is None
    assert repl.exit_code == 1  # the refused /model, piped


def test_model_picks_another_model_the_server_serves() -> None:
    with FakeOpenAI(Script(others=["fake-org/other-chat"])) as server:
        repl, err = run_piped(server.url, "/model\n/model fake-org/other-chat\nhi\n")
        asked = server.requests[-1]["model"]
    assert "it serves fake-org/fake-vl-7b-chat, fake-org/other-chat (/model NAME picks one)" in err
    assert f"model: fake-org/other-chat (served by {server.url}); the next message asks it" in err
    assert asked == "fake-org/other-chat" and repl.conversation.model == "fake-org/other-chat"


def test_model_with_a_server_that_is_down_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    _, err = run_piped(url, "/model x\n")
    line = next(line for line in err.splitlines() if line.startswith("error: model"))
    assert line == f"error: model: not known (cannot reach {url}: connection refused; is the server running?)"


@pytest.mark.slow
def test_model_in_the_app_with_a_server_loads_nothing() -> None:
    from tui_support import notices, run_async, type_line, wait_for

    from dsvl_tui.tui.app import DsvlApp

    @run_async
    async def drive() -> None:
        with FakeOpenAI() as server:
            app = DsvlApp(Options(endpoint=server.url))
            async with app.run_test(size=(160, 24)) as pilot:
                await wait_for(pilot, lambda: app.status.state == "ready", timeout=30)
                engine = app.engine
                await type_line(pilot, "/model deepseek-ai/deepseek-vl-7b-chat")
                await wait_for(pilot, lambda: notices(app, error=True))
                assert "chooses the model and serves only fake-org/fake-vl-7b-chat" in notices(app, error=True)[-1]
                assert not app.loading and app.engine is engine and app.status.state == "ready"
                assert not any("loading" in n for n in notices(app))

    drive()
