"""The front ends against the real server (``dsvl-chat serve``'s app in uvicorn) with the tiny checkpoint.

Greedy answers through ``--endpoint`` equal the engine's own, in process:
``RemoteBackend`` directly (with an image, a system prompt and a second turn),
``dsvl-chat ask`` as a subprocess, and the plain REPL.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from process_support import PROCESS_TIMEOUT
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from dsvl_tui.backends.remote import RemoteBackend
from dsvl_tui.core.options import Options
from dsvl_tui.repl.app import Repl
from engine.types import GenerationSettings, Message

GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=12)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tiny_engine: Any) -> Iterator[str]:
    pytest.importorskip("fastapi")
    from dsvl_tui.serve.app import create_app
    from tests.serve.conftest import running_server

    with running_server(create_app(tiny_engine, model_name="tiny", api_key="k3y")) as url:
        yield url


def in_process(engine: Any, messages: list[Message], system: str | None = None) -> str:
    return "".join(engine.stream(messages, GREEDY, system=system, cache_key="in-process reference"))


def test_remote_backend_answers_equal_the_engines(server: str, tiny_engine: Any, tmp_path: Path) -> None:
    picture = tmp_path / "p.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(picture)
    backend = RemoteBackend(server, api_key="k3y")
    assert backend.refresh().model_id == "tiny" and backend.info.device == server
    first = [Message("user", "What is this?", images=[picture])]
    stream = backend.stream(first, GREEDY, system="Be brief.")
    remote = "".join(stream)
    assert stream.stats.new_tokens >= 1 and stream.stats.stop_reason in ("eos", "length")
    assert stream.stats.prompt_tokens > 10  # from the server's usage
    assert remote == in_process(tiny_engine, first, system="Be brief.")
    second = [*first, Message("assistant", remote), Message("user", "And now?")]
    assert "".join(backend.stream(second, GREEDY, system="Be brief.")) == \
        in_process(tiny_engine, second, system="Be brief.")


@pytest.mark.slow
def test_ask_through_the_endpoint_equals_the_engines_answer(server: str, tiny_engine: Any) -> None:
    env = {**os.environ, "DSVL_API_KEY": "k3y", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "dsvl_tui.cli", "ask", "Describe the weather.", "--endpoint", server,
         "--temperature", "0", "--max-new-tokens", "12", "--quiet"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=PROCESS_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n") == in_process(tiny_engine, [Message("user", "Describe the weather.")])


def test_the_repl_through_the_endpoint_equals_the_engines_answer(server: str, tiny_engine: Any) -> None:
    out, err = io.StringIO(), io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text("Describe the weather.\r\x04")
        repl = Repl(Options(endpoint=server, api_key="k3y", settings=GREEDY), input=pipe, output=DummyOutput(),
                    stdout=out, stderr=err, colour=False)
        assert repl.run() == 0, err.getvalue()
    answer = repl.conversation.messages[-1]
    assert answer.role == "assistant" and not answer.error
    assert answer.text == in_process(tiny_engine, [Message("user", "Describe the weather.")])
    assert (repl.conversation.model, repl.conversation.endpoint) == ("tiny", server)


@pytest.mark.slow
def test_the_app_through_the_endpoint_shows_the_server_and_gives_the_engines_answer(server: str,
                                                                                     tiny_engine: Any) -> None:
    from tui_support import ready, run_async, screen_text, type_line, wait_for

    from dsvl_tui.tui.app import DsvlApp

    @run_async
    async def drive() -> None:
        app = DsvlApp(Options(endpoint=server, api_key="k3y", settings=GREEDY))
        async with app.run_test(size=(120, 30)) as pilot:
            await ready(pilot)
            await type_line(pilot, "Describe the weather.")
            conversation = app.active.conversation
            await wait_for(pilot, lambda: len(conversation.messages) == 2 and app.queue.for_pane(app.active) is None)
            assert conversation.messages[-1].text == expected
            assert (conversation.model, conversation.endpoint) == ("tiny", server)
            assert (app.status.model, app.status.device) == ("tiny", server)
            assert server.removeprefix("http://") in screen_text(app)

    expected = in_process(tiny_engine, [Message("user", "Describe the weather.")])
    drive()
