"""A request's ``stop`` strings reach the engine: it ends the answer there, instead of serve cutting its text."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from dsvl_tui.serve.app import create_app
from engine.types import GenerationSettings, Message

MAX_TOKENS = 24
GREEDY = GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=MAX_TOKENS)


class Recording:
    """The tiny engine, keeping every stream serve starts (to read the engine's own stats)."""

    def __init__(self, engine: Any):
        self.engine, self.info, self.streams = engine, engine.info, []

    def stream(self, messages: Any, settings: Any, **kwargs: Any) -> Any:
        stream = self.engine.stream(messages, settings, **kwargs)
        self.streams.append(stream)
        return stream


def test_a_stop_string_ends_the_generation_in_the_engine(tiny_engine: Any) -> None:
    question = Message("user", "Describe the weather.")
    alone = tiny_engine.stream([question], GREEDY, cache_key="stop-reference")
    full = "".join(alone)
    assert alone.stats.new_tokens == MAX_TOKENS, full  # the reference runs to the budget
    ids = alone.token_ids
    # A stop string that appears after the first few tokens: the text of tokens 4..5 as generated.
    before = tiny_engine.prompt_format.decode(ids[:4])
    stop = tiny_engine.prompt_format.decode(ids[:6])[len(before):]
    assert stop.strip() and full.startswith(before + stop), (full, stop)
    recording = Recording(tiny_engine)
    with TestClient(create_app(recording, model_name="tiny")) as client:
        answer = client.post("/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": question.text}], "max_tokens": MAX_TOKENS,
            "temperature": 0, "stop": [stop]}).json()
    assert answer["choices"][0]["message"]["content"] == full[:full.find(stop)]
    assert answer["choices"][0]["finish_reason"] == "stop"
    [stream] = recording.streams
    # The engine itself met the stop string (not a cancel from serve) and generated no further.
    assert stream.stats.stop_reason == "stop_string"
    assert stream.stats.new_tokens < MAX_TOKENS
    assert answer["usage"]["completion_tokens"] == stream.stats.new_tokens
