"""The chat-completions API answers as the in-process engine does."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dsvl_tui.serve.app import create_app
from engine.types import GenerationSettings, Message

GREEDY = GenerationSettings(temperature=0, max_new_tokens=12)


def png_url(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (40, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def body(content: Any = "Describe the weather.", **extra: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 12,
            "temperature": 0, **extra}


def in_process(eng: Any, message: Message, system: str | None = None) -> str:
    return "".join(eng.stream([message], GREEDY, system=system, cache_key="test-reference"))


def sse_events(lines: Any) -> list[Any]:
    events = []
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


@pytest.fixture(scope="module")
def client(tiny_engine: Any) -> Any:
    with TestClient(create_app(tiny_engine, model_name="tiny")) as test_client:
        yield test_client


def test_whole_answer_equals_the_engines_greedy_answer(client: Any, tiny_engine: Any) -> None:
    response = client.post("/v1/chat/completions", json=body())
    assert response.status_code == 200
    answer = response.json()
    assert answer["object"] == "chat.completion"
    expected = in_process(tiny_engine, Message("user", "Describe the weather."))
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": expected}
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")
    usage = answer["usage"]
    assert usage["completion_tokens"] >= 1 and usage["prompt_tokens"] > 10
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streamed_answer_with_an_image_and_system_equals_the_engines(client: Any, tiny_engine: Any) -> None:
    url = png_url()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is this?"}]
    request = body(content, stream=True, stream_options={"include_usage": True})
    request["messages"].insert(0, {"role": "system", "content": "Be brief."})
    with client.stream("POST", "/v1/chat/completions", json=request) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.iter_lines())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert text == in_process(tiny_engine, Message("user", "What is this?", [image]), system="Be brief.")
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1


def test_stop_string_cuts_the_answer(client: Any, tiny_engine: Any) -> None:
    full = in_process(tiny_engine, Message("user", "Describe the weather."))
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert stop.strip(), full
    answer = client.post("/v1/chat/completions", json=body(stop=[stop])).json()
    assert answer["choices"][0]["message"]["content"] == full[:full.find(stop)]
    assert answer["choices"][0]["finish_reason"] == "stop"


def test_models_and_health(client: Any) -> None:
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny"]
    assert client.get("/health").json()["status"] == "ready"


def test_unknown_model_is_404_in_openais_error_shape(client: Any) -> None:
    response = client.post("/v1/chat/completions", json={**body(), "model": "gpt-4o"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and "'tiny'" in error["message"]
    assert client.get("/v1/nothing").json()["error"]["code"] == "not_found"


class _BreaksMidAnswer:
    """The tiny engine, but each answer fails after its second chunk (as an out-of-memory error would)."""

    def __init__(self, eng: Any) -> None:
        self._eng = eng

    def __getattr__(self, name: str) -> Any:
        return getattr(self._eng, name)

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        from engine.errors import GenerationError

        real = self._eng.stream(*args, **kwargs)

        class Broken:
            stats = real.stats

            def __iter__(self) -> Any:
                for number, chunk in enumerate(real, 1):
                    yield chunk
                    if number == 2:
                        real.stats.stop_reason = "error"
                        raise GenerationError("CUDA out of memory: the answer so far is kept")

        return Broken()


def test_an_answer_that_fails_part_way_ends_with_openais_error_event_and_the_server_keeps_serving(
        tiny_engine: Any) -> None:
    with TestClient(create_app(_BreaksMidAnswer(tiny_engine), model_name="tiny")) as broken:
        with broken.stream("POST", "/v1/chat/completions", json=body(stream=True)) as response:
            assert response.status_code == 200  # the headers went out before the failure
            events = sse_events(response.iter_lines())
        texts = [e["choices"][0]["delta"].get("content") for e in events if isinstance(e, dict) and e.get("choices")]
        assert len([t for t in texts if t]) == 2  # the text so far reached the client
        error = next(e for e in events if isinstance(e, dict) and "error" in e)
        assert error["error"]["code"] == "generation_failed" and "out of memory" in error["error"]["message"]
        assert events[-1] == "[DONE]"
        whole = broken.post("/v1/chat/completions", json=body())
        assert whole.status_code == 500 and whole.json()["error"]["code"] == "generation_failed"
        assert broken.get("/health").status_code == 200


def test_the_remote_client_keeps_the_text_so_far_and_reports_the_servers_error_on_one_line(tiny_engine: Any) -> None:
    from dsvl_tui.backends.remote import RemoteBackend, RemoteStreamError
    from tests.serve.conftest import running_server

    with running_server(create_app(_BreaksMidAnswer(tiny_engine), model_name="tiny")) as url:
        remote = RemoteBackend(url)
        stream = remote.stream([Message("user", "Describe the weather.")], GREEDY)
        received: list[str] = []
        with pytest.raises(RemoteStreamError) as failed:
            for chunk in stream:
                received.append(chunk)
        remote.close()
    assert len(received) == 2 and "out of memory" in str(failed.value) and "\n" not in str(failed.value)


class _Keeping:
    """The tiny engine, keeping the settings and the stream of each answer the server asks for."""

    def __init__(self, eng: Any) -> None:
        self._eng = eng
        self.settings: list[GenerationSettings] = []
        self.streams: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._eng, name)

    def stream(self, messages: Any, settings: GenerationSettings, **kwargs: Any) -> Any:
        self.settings.append(settings)
        stream = self._eng.stream(messages, settings, **kwargs)
        self.streams.append(stream)
        return stream


def test_the_requests_sampling_fields_reach_the_engine(tiny_engine: Any) -> None:
    keeping = _Keeping(tiny_engine)
    with TestClient(create_app(keeping, model_name="tiny")) as kept:
        response = kept.post("/v1/chat/completions", json=body(temperature=0.7, top_p=0.5, seed=3, top_k=7,
                                                               repetition_penalty=1.3, max_tokens=5))
    assert response.status_code == 200
    assert keeping.settings == [GenerationSettings(temperature=0.7, top_p=0.5, seed=3, top_k=7,
                                                   repetition_penalty=1.3, max_new_tokens=5)]


def test_a_second_turn_reuses_the_first_turns_context(tiny_engine: Any) -> None:
    keeping = _Keeping(tiny_engine)
    with TestClient(create_app(keeping, model_name="tiny")) as kept:
        first = kept.post("/v1/chat/completions", json=body()).json()
        answer = first["choices"][0]["message"]["content"]
        turns = [{"role": "user", "content": "Describe the weather."}, {"role": "assistant", "content": answer},
                 {"role": "user", "content": "And tomorrow?"}]
        second = kept.post("/v1/chat/completions", json={**body(), "messages": turns})
    assert second.status_code == 200
    turn1, turn2 = (stream.stats for stream in keeping.streams)
    assert turn2.reused_tokens > 0
    # Turn 1's whole prompt (and some of its answer) is reused, not only the system prompt the two share;
    # two positions of slack for a token the template's join may merge where the answer begins.
    assert turn2.reused_tokens >= turn1.prompt_tokens - 2, (turn1, turn2)
