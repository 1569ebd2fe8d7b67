"""Every input is bounded before work is done on it (issue 20): sampling ranges, the window by length, the body's
time."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from dsvl_tui.serve.app import create_app
from dsvl_tui.serve.requests import MAX_SEED, Limits, RequestError, by_length
from engine.types import GenerationSettings, Message
from tests.serve.conftest import running_server


def request(content: Any = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 2, "temperature": 0,
            **extra}


@pytest.fixture(scope="module")
def client(tiny_engine: Any) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_engine, model_name="tiny")) as test_client:
        yield test_client


# --- sampling fields ------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("temperature", "1e-300"), ("temperature", "1e-30"), ("temperature", "101"), ("temperature", "NaN"),
    ("temperature", "Infinity"), ("repetition_penalty", "1e-300"), ("repetition_penalty", "1e300"),
    ("seed", str(10**100)), ("seed", "-1"), ("top_k", str(10**30)), ("max_tokens", str(10**30)),
    ("top_p", "NaN"),
])
def test_a_sampling_field_out_of_its_range_is_400_naming_it(client: TestClient, field: str, value: str) -> None:
    body = json.dumps(request(**{field: 0})).replace(f'"{field}": 0', f'"{field}": {value}')
    response = client.post("/v1/chat/completions", content=body.encode())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_value" and error["param"] == field
    assert error["message"].startswith(f"invalid request: {field}: ") and "\n" not in error["message"]


@pytest.mark.parametrize("extra", [
    {"temperature": 0.001}, {"temperature": 100}, {"repetition_penalty": 0.01, "temperature": 1},
    {"repetition_penalty": 100}, {"seed": 0, "temperature": 1}, {"seed": MAX_SEED, "temperature": 1},
], ids=str)
def test_sampling_fields_at_their_bounds_are_answered(client: TestClient, extra: dict[str, Any]) -> None:
    response = client.post("/v1/chat/completions", json=request(**extra))
    assert response.status_code == 200, response.text


# --- the window, by length ------------------------------------------------------------------------

class Spy:
    """Stands in for a tokenizer and records the length of every text it is given."""

    def __init__(self, real: Any):
        self.real = real
        self.lengths: list[int] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.real, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            texts = [a for a in args if isinstance(a, str)] + [t for a in args if isinstance(a, list) for t in a
                                                               if isinstance(t, str)]
            self.lengths += [len(text) for text in texts]
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def tokenized(tiny_engine: Any, monkeypatch: pytest.MonkeyPatch) -> Spy:
    """Every text the engine's prompt tokenizer encodes, by length."""
    fmt = tiny_engine.prompt_format
    spy = Spy(fmt.text_tokenizer)
    monkeypatch.setattr(fmt, "text_tokenizer", spy)
    monkeypatch.setattr(fmt, "tokenizer", Spy(fmt.tokenizer))
    return spy


def test_the_engine_knows_how_many_characters_a_token_covers(tiny_engine: Any) -> None:
    vocab = tiny_engine.prompt_format.text_tokenizer.get_vocab()
    assert tiny_engine.info.max_token_chars == max(len(token) for token in vocab) > 1


def test_a_message_that_cannot_fit_the_window_is_refused_without_tokenizing(client: TestClient, tiny_engine: Any,
                                                                            tokenized: Spy) -> None:
    bound = tiny_engine.info.context_length * tiny_engine.info.max_token_chars
    text = "ab " * (8 * 1024 * 1024 // 3)  # 8 MiB: minutes of tokenizing, gigabytes at its peak
    assert len(text) > bound
    response = client.post("/v1/chat/completions", json=request(text))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and "shorten it" in error["message"]
    assert f"{tiny_engine.info.context_length:,}-token" in error["message"]
    assert tokenized.lengths == []
    assert client.post("/v1/chat/completions", json=request()).status_code == 200


def test_a_long_system_prompt_counts_with_the_last_message(client: TestClient, tiny_engine: Any,
                                                           tokenized: Spy) -> None:
    bound = tiny_engine.info.context_length * tiny_engine.info.max_token_chars
    body = request("x" * (bound // 2 + 1))
    body["messages"].insert(0, {"role": "system", "content": "y" * (bound // 2 + 1)})
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and "system prompt" in response.json()["error"]["message"]
    assert tokenized.lengths == []


def test_older_turns_that_cannot_fit_are_dropped_untokenized_with_the_engines_answer(
        client: TestClient, tiny_engine: Any, tokenized: Spy) -> None:
    bound = tiny_engine.info.context_length * tiny_engine.info.max_token_chars
    body = request("What is the weather?", max_tokens=6)
    body["messages"][:0] = [{"role": "user", "content": "old " * (bound // 2)},
                            {"role": "assistant", "content": "ok"}]
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert tokenized.lengths and max(tokenized.lengths) < bound // 2  # the old turn never reached the tokenizer
    alone = "".join(tiny_engine.stream([Message("user", "What is the weather?")],
                                       GenerationSettings(temperature=0, max_new_tokens=6), cache_key="reference"))
    assert response.json()["choices"][0]["message"]["content"] == alone


def test_by_length_refuses_only_what_surely_cannot_fit() -> None:
    window, per_token = 10, 4
    exact = [Message("user", "x" * 40)]
    assert by_length(exact, None, window, per_token) == exact  # 40 characters may be 10 tokens
    assert by_length([Message("user", " " * 100 + "x" * 40 + "\n" * 100)], None, window, per_token)  # stripped
    with pytest.raises(RequestError) as refused:
        by_length([Message("user", "x" * 41)], None, window, per_token)
    assert refused.value.status == 400 and refused.value.code == "context_length_exceeded"
    with pytest.raises(RequestError):
        by_length(exact, "s", window, per_token)  # the system prompt is always in the prompt
    turns = [Message("user", "a" * 30), Message("assistant", "b" * 5), Message("user", "c" * 5),
             Message("assistant", "d" * 5), Message("user", "e" * 20)]
    assert by_length(turns, None, window, per_token) == turns[2:]  # 'a' turn would make 65 > 40: dropped
    assert by_length(turns, None, window, None) == turns  # no bound known: the engine tokenizes and counts


# --- the body's deadline --------------------------------------------------------------------------

def test_a_body_that_trickles_in_is_answered_408_at_the_deadline_and_the_connection_closed(tiny_engine: Any) -> None:
    app = create_app(tiny_engine, model_name="tiny", limits=Limits(body_seconds=1))
    with running_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        stop = threading.Event()

        def trickle() -> None:  # one byte at a time, faster than any gap between reads would time out
            try:
                while not stop.wait(0.05):
                    sock.sendall(b" ")
            except OSError:  # the server closed the connection
                pass

        with sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000000\r\n\r\n{")
            sender = threading.Thread(target=trickle, daemon=True)
            sender.start()
            try:
                received = b""
                while chunk := sock.recv(65536):  # until the server closes (or 60 s: the test fails)
                    received += chunk
            finally:
                stop.set()
                sender.join(10)
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), received[:200]
    assert json.loads(rest)["error"]["code"] == "request_timeout"


def test_a_head_that_trickles_in_closes_the_connection_at_the_deadline(tiny_engine: Any) -> None:
    from dsvl_tui.serve.protocol import head_deadline

    app = create_app(tiny_engine, model_name="tiny")
    with running_server(app, http=head_deadline(1)) as url:
        with httpx.Client(base_url=url, timeout=30) as kept_alive:  # answers as before, twice on one connection
            assert [kept_alive.get("/health").status_code for _ in range(2)] == [200, 200]
        sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=60)
        with sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            closed = threading.Event()

            def trickle() -> None:  # a header byte at a time: uvicorn's own timer restarts on each
                try:
                    while not closed.wait(0.05):
                        sock.sendall(b"a")
                except OSError:
                    pass

            sender = threading.Thread(target=trickle, daemon=True)
            sender.start()
            try:
                assert sock.recv(65536) == b""  # closed by the server (or the 60 s timeout fails the test)
            except ConnectionResetError:
                pass
            finally:
                closed.set()
                sender.join(10)


# --- /health --------------------------------------------------------------------------------------

def test_health_says_ready_and_nothing_of_the_model_or_its_path(tiny_engine: Any) -> None:
    path = tiny_engine.info.model_id  # a local folder: the name the server serves when none is given
    with TestClient(create_app(tiny_engine, api_key="k" * 32)) as test_client:
        response = test_client.get("/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "busy": False, "running": 0, "queued": 0, "max_batch": 1}
        assert path.rsplit("/", 1)[-1] not in response.text
        assert test_client.get("/v1/models").status_code == 401
