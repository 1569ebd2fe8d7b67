"""``RemoteBackend`` against a small OpenAI-compatible server (``fake_openai``) on a loopback port."""

from __future__ import annotations

import base64
import socket
import threading
import time
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, Script
from PIL import Image

from dsvl_tui.backends.choose import load_backend
from dsvl_tui.backends.remote import RemoteBackend, RemoteError, public_url
from dsvl_tui.core.options import Options
from engine.errors import EngineError, ImageError
from engine.types import ChatBackend, GenerationSettings, Message

SETTINGS = GenerationSettings(temperature=0.0, top_p=0.9, top_k=7, repetition_penalty=1.3, max_new_tokens=33, seed=5)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answer(backend: ChatBackend, messages: list[Message], **kwargs) -> tuple[str, object]:
    stream = backend.stream(messages, SETTINGS, **kwargs)
    return "".join(stream), stream.stats


def test_streams_the_answer_with_stats_and_the_servers_model() -> None:
    with FakeOpenAI() as server:
        backend = load_backend(Options(endpoint=server.url))
        assert isinstance(backend, RemoteBackend)
        assert backend.info.model_id == "fake-org/fake-vl-7b-chat"
        assert backend.info.device == server.url
        text, stats = answer(backend, [Message("user", "hi")])
    assert text == "Hello there"
    assert stats.stop_reason == "eos"
    assert (stats.prompt_tokens, stats.new_tokens) == (21, 3)  # from the usage event
    assert stats.time_to_first_token is not None and 0 <= stats.time_to_first_token <= stats.total_seconds
    assert stats.tokens_per_second is not None and stats.tokens_per_second > 0


def test_without_usage_new_tokens_are_the_chunks_and_length_is_the_stop_reason() -> None:
    with FakeOpenAI(Script(chunks=["a", "b", "c", "d"], finish="length", usage=False)) as server:
        text, stats = answer(RemoteBackend(server.url + "/v1/"), [Message("user", "hi")])
    assert text == "abcd"
    assert stats.new_tokens == 4 and stats.stop_reason == "length"


def test_the_request_is_openais_shape_with_images_system_settings_and_key(tmp_path: Path) -> None:
    picture = tmp_path / "p.png"
    Image.new("RGB", (20, 10), "red").save(picture)
    in_memory = Image.new("RGB", (4, 4), "blue")
    messages = [Message("user", "what is this?", images=[picture]), Message("assistant", "red"),
                Message("user", "and this?", images=[in_memory])]
    with FakeOpenAI(Script(api_key="s3cret")) as server:
        backend = RemoteBackend(server.url, api_key="s3cret")
        answer(backend, messages, system="Be brief.")
        body, headers = server.requests[-1], server.headers[-1]
    assert headers["Authorization"] == "Bearer s3cret"
    assert body["model"] == "fake-org/fake-vl-7b-chat" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.0, 0.9, 33, 5)
    assert (body["top_k"], body["repetition_penalty"]) == (7, 1.3)
    wire = body["messages"]
    assert wire[0] == {"role": "system", "content": "Be brief."}
    assert wire[2] == {"role": "assistant", "content": "red"}
    first = wire[1]["content"]
    assert first[1] == {"type": "text", "text": "what is this?"}
    url = first[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == picture.read_bytes()  # the file as it is
    assert wire[3]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_images_are_refused_like_the_image_command_refuses_them(tmp_path: Path) -> None:
    backend = RemoteBackend("http://127.0.0.1:9")
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    for source, words in [(tmp_path / "gone.png", "not found"), (tmp_path, "folder"), (not_image, "not an image")]:
        with pytest.raises(ImageError, match=words):
            backend.payload([Message("user", "x", images=[source])], SETTINGS)


def test_a_server_that_is_down_is_one_line_and_the_next_message_retries() -> None:
    port = free_port()
    backend = load_backend(Options(endpoint=f"http://127.0.0.1:{port}"))  # loads even so: the server may come up
    with pytest.raises(RemoteError) as caught:
        backend.stream([Message("user", "hi")], SETTINGS)
    message = str(caught.value)
    assert message == f"cannot reach http://127.0.0.1:{port}: connection refused; is the server running?"
    assert isinstance(caught.value, EngineError) and "\n" not in message
    server = FakeOpenAI()
    server.server.server_close()  # take the very port that was refused
    from http.server import ThreadingHTTPServer

    server.server = ThreadingHTTPServer(("127.0.0.1", port), server.server.RequestHandlerClass)
    server.server.daemon_threads = True
    server._thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    with server:
        text, _ = answer(backend, [Message("user", "hi")])
        assert text == "Hello there" and backend.info.model_id == "fake-org/fake-vl-7b-chat"


def test_http_errors_are_the_servers_message_on_one_line() -> None:
    with FakeOpenAI(Script(api_key="right")) as server:
        with pytest.raises(RemoteError, match=r"HTTP 401\): invalid API key; check --api-key$"):
            RemoteBackend(server.url, api_key="wrong").stream([Message("user", "hi")], SETTINGS)
    with FakeOpenAI(Script(status=503, error="the queue is full;\n try again")) as server:
        with pytest.raises(RemoteError, match=r"HTTP 503\): the queue is full; try again$"):
            RemoteBackend(server.url).stream([Message("user", "hi")], SETTINGS)


def test_cancel_closes_the_stream_within_one_chunk() -> None:
    with FakeOpenAI(Script(chunks=[f"t{i} " for i in range(200)], delay=0.02)) as server:
        cancel = threading.Event()
        stream = RemoteBackend(server.url).stream([Message("user", "hi")], SETTINGS, cancel=cancel)
        got = []
        for chunk in stream:
            got.append(chunk)
            if len(got) == 3:
                cancel.set()
        assert len(got) == 3
        assert stream.stats.stop_reason == "cancelled" and stream.stats.new_tokens == 3
        assert server.hung_up.wait(5), "the server never saw the client hang up"
        assert server.sent < 200


@pytest.mark.slow
def test_cancel_while_the_server_is_silent_returns_at_once() -> None:
    with FakeOpenAI(Script(wait=3.0, chunks=[f"t{i} " for i in range(50)], delay=0.02)) as server:
        cancel = threading.Event()
        threading.Timer(0.2, cancel.set).start()
        started = time.monotonic()
        stream = RemoteBackend(server.url).stream([Message("user", "hi")], SETTINGS, cancel=cancel)
        assert list(stream) == []
        assert time.monotonic() - started < 1.5  # not the 3 s the server keeps quiet
        assert stream.stats.stop_reason == "cancelled" and stream.stats.new_tokens == 0
        assert server.hung_up.wait(10), "the connection was not closed once the server spoke"


def test_a_stream_cut_short_is_a_generation_error_after_the_text_so_far() -> None:
    from engine.errors import GenerationError

    with FakeOpenAI(Script(chunks=["a", "b", "c"], truncate=True)) as server:
        stream = RemoteBackend(server.url).stream([Message("user", "hi")], SETTINGS)
        got: list[str] = []
        with pytest.raises(GenerationError, match="closed the stream before the answer ended"):
            got.extend(stream)
    assert got == ["a", "b", "c"]


def test_the_endpoint_shown_and_stored_has_no_credentials() -> None:
    assert public_url("https://user:pw@example.com:8443/v1/?token=x#y") == "https://example.com:8443/v1"
    backend = RemoteBackend("http://alice:pw@127.0.0.1:9/v1", api_key="k")
    assert backend.endpoint == backend.info.device == "http://127.0.0.1:9"
    assert "pw" not in repr(Options(endpoint="http://x", api_key="pw"))
