"""A broken or hostile server behind ``--endpoint``: what it streams is untrusted (issue 20, section 3).

Every field it sends is checked, a bad one is dropped with a note and never
recorded; the answer stops at ``max_new_tokens`` and the request is
cancelled; a line is at most 1 MiB; anything going wrong in the reader ends
the answer with its text kept; and whatever it sent, the conversation is
saved as a transcript that reads back.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from fake_openai import FakeOpenAI, Script

from dsvl_tui.backends import remote, remote_stream
from dsvl_tui.backends.remote import MAX_CHARS_PER_TOKEN, RemoteBackend, RemoteStreamError
from dsvl_tui.backends.remote_events import MAX_LINE_BYTES, LineTooLong, bounded_lines
from dsvl_tui.core.conversation import Conversation
from dsvl_tui.core.turn import stream_answer
from dsvl_tui.storage.transcript import format as transcript_format
from dsvl_tui.storage.transcript import load_transcript, save_transcript
from engine.types import GenerationSettings

pytestmark = pytest.mark.timeout(120)


def sse(event: Any) -> bytes:
    """One event as a server writes it; a str is sent as it is (JSON no encoder would write)."""
    return b"data: " + (event if isinstance(event, str) else json.dumps(event)).encode() + b"\n\n"


def delta(text: Any, finish: Any = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


DONE = b"data: [DONE]\n\n"


def ask(server: FakeOpenAI, tmp_path: Path, max_new_tokens: int = 64) -> tuple[Conversation, list[str], list[str]]:
    """One answer through the client into a conversation, saved and read back (which must work)."""
    conversation = Conversation(settings=GenerationSettings(max_new_tokens=max_new_tokens))
    conversation.add_user("hi")
    chunks: list[str] = []
    notes: list[str] = []
    stream_answer(RemoteBackend(server.url), conversation, cancel=threading.Event(), on_chunk=chunks.append,
                  on_note=notes.append)
    path = save_transcript(conversation, tmp_path / "chat.json")
    loaded = load_transcript(path)  # never a transcript the app refuses to read
    assert [m.text for m in loaded.messages] == [m.text for m in conversation.messages]
    return loaded, chunks, notes


# A JSON number too large for any float or count, as the issue sent it (10**400), and one json reads as inf.
HUGE = "1" + "0" * 400


@pytest.mark.parametrize("value", ["-5", '"abc"', HUGE, "1e400", "2.5", "true", "[1]"])
@pytest.mark.parametrize("key", ["prompt_tokens", "completion_tokens"])
def test_a_usage_count_that_is_not_one_is_dropped_with_a_note(key: str, value: str, tmp_path: Path) -> None:
    usage = '{"choices": [], "usage": {"' + key + '": ' + value + "}}"
    script = Script(raw=[sse(delta("Hel")), sse(delta("lo", "stop")), sse(usage), DONE])
    with FakeOpenAI(script) as server:
        loaded, chunks, notes = ask(server, tmp_path)
    answer = loaded.messages[-1]
    assert answer.text == "Hello" and answer.error is None
    assert answer.stats.prompt_tokens == 0 and answer.stats.new_tokens == 2  # the count dropped, the deltas counted
    assert len(notes) == 1 and f"usage.{key}" in notes[0] and "dropped" in notes[0] and "\n" not in notes[0]


def test_valid_usage_is_kept(tmp_path: Path) -> None:
    usage = {"choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 2}}
    with FakeOpenAI(Script(raw=[sse(delta("Hel")), sse(delta("lo", "stop")), sse(usage), DONE])) as server:
        loaded, _, notes = ask(server, tmp_path)
    assert (loaded.messages[-1].stats.prompt_tokens, loaded.messages[-1].stats.new_tokens) == (21, 2)
    assert notes == []


MALFORMED = [
    {"choices": [{"delta": "s"}]},  # the issue's own
    {"choices": "abc"},
    {"choices": 5},
    {"choices": [5, None]},
    {"choices": [{"delta": {"content": 5}}]},
    {"choices": [{"delta": {"content": ["x"]}}]},
    {"choices": [{"delta": {}, "finish_reason": {"x": 1}}]},
    {"choices": [{"delta": {}, "finish_reason": "x" * 1000}]},
    {"usage": "lots"},
    [1, 2, 3],
    "a string",
]


@pytest.mark.parametrize("bad", MALFORMED, ids=[json.dumps(b)[:30] for b in MALFORMED])
def test_malformed_events_are_dropped_and_the_answer_goes_on(bad: Any, tmp_path: Path) -> None:
    script = Script(raw=[sse(delta("Hel")), sse(bad), sse(delta("lo", "stop")), DONE])
    with FakeOpenAI(script) as server:
        loaded, chunks, notes = ask(server, tmp_path)
    answer = loaded.messages[-1]
    assert answer.text == "Hello" and answer.error is None and answer.stats.stop_reason == "eos"
    assert len(notes) == 1 and "ignored" in notes[0]


def test_an_error_event_ends_the_answer_with_one_short_line_and_the_text_kept(tmp_path: Path) -> None:
    error = {"error": {"message": "out of\nmemory " * 50_000}}
    with FakeOpenAI(Script(raw=[sse(delta("Hel")), sse(error)])) as server:
        loaded, _, _ = ask(server, tmp_path)
    answer = loaded.messages[-1]
    assert answer.text == "Hel"
    assert answer.error.startswith(f"{server.url}: out of memory out of") and "\n" not in answer.error
    assert len(answer.error) < 400


def test_an_endless_stream_stops_at_max_new_tokens_and_the_request_is_cancelled(tmp_path: Path) -> None:
    with FakeOpenAI(Script(raw=[], forever=sse(delta("la ")))) as server:
        loaded, chunks, notes = ask(server, tmp_path, max_new_tokens=33)
        assert server.hung_up.wait(30), "the client never hung up"
    answer = loaded.messages[-1]
    assert answer.text == "la " * 34 and len(chunks) == 34  # one event a token, and one for a held-back tail
    assert answer.stats.stop_reason == "length" and answer.stats.new_tokens == 33 and answer.error is None
    assert notes == [f"{server.url} went on past max_new_tokens (33); the answer stops there"]


def test_endless_events_without_text_stop_too(tmp_path: Path) -> None:
    with FakeOpenAI(Script(raw=[sse(delta("a"))], forever=sse({"choices": [{"delta": {}}]}))) as server:
        loaded, _, _ = ask(server, tmp_path, max_new_tokens=10)
        assert server.hung_up.wait(30)
    assert loaded.messages[-1].text == "a" and loaded.messages[-1].stats.stop_reason == "length"


def test_a_delta_longer_than_max_new_tokens_worth_of_text_is_cut_there(tmp_path: Path) -> None:
    with FakeOpenAI(Script(raw=[sse(delta("x" * 100_000)), sse(delta("y", "stop")), DONE])) as server:
        loaded, _, notes = ask(server, tmp_path, max_new_tokens=4)
    answer = loaded.messages[-1]
    assert answer.text == "x" * (4 * MAX_CHARS_PER_TOKEN) and answer.stats.stop_reason == "length"
    assert notes and "max_new_tokens (4)" in notes[0]


def test_a_usage_count_above_max_new_tokens_is_dropped(tmp_path: Path) -> None:
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 10_000}}
    with FakeOpenAI(Script(raw=[sse(delta("a", "stop")), sse(usage), DONE])) as server:
        loaded, _, notes = ask(server, tmp_path, max_new_tokens=8)
    assert loaded.messages[-1].stats.new_tokens == 1
    assert len(notes) == 1 and "10000 new tokens" in notes[0]


def test_an_answer_longer_than_a_transcript_message_is_cut_and_still_reads_back(tmp_path: Path) -> None:
    limit = transcript_format.MAX_TEXT_CHARS
    piece = "z" * 120  # a long token, but within MAX_CHARS_PER_TOKEN
    count = limit // len(piece) + 100  # past the limit
    script = Script(raw=[sse(delta(piece))] * count + [sse(delta("", "stop")), DONE])
    with FakeOpenAI(script) as server:
        loaded, chunks, _ = ask(server, tmp_path, max_new_tokens=count + 10)
    assert len("".join(chunks)) == count * len(piece) > limit  # all of it was streamed to the screen
    answer = loaded.messages[-1]
    assert len(answer.text) == limit
    assert answer.text.startswith(piece) and answer.text.endswith("the most a transcript holds]")


def test_a_line_without_an_end_stops_at_one_mebibyte_with_the_text_so_far(tmp_path: Path) -> None:
    script = Script(raw=[sse(delta("Hel")), b"data: " + b"x" * 65536], forever=b"x" * 65536)
    with FakeOpenAI(script) as server:
        loaded, _, _ = ask(server, tmp_path)
        assert server.hung_up.wait(30), "the client kept reading"
        sent = server.sent
    answer = loaded.messages[-1]
    assert answer.text == "Hel"
    assert answer.error == f"{server.url} sent a line longer than 1 MiB; is it an OpenAI-compatible server?"
    assert sent * 65536 < 64 * MAX_LINE_BYTES  # it read about one line's worth, not the endless stream


def test_lines_are_split_at_any_line_end_and_bounded() -> None:
    chunks = [b"data: a\r", b"\ndata: b\rdata: c\n", b"da", b"ta: d", b"\r\n", b"tail"]
    assert list(bounded_lines(chunks)) == ["data: a", "data: b", "data: c", "data: d", "tail"]
    assert list(bounded_lines([b"\xff\xfeok\n"])) == ["\ufffd\ufffdok"]
    assert list(bounded_lines([b"x" * 10 + b"\n"], limit=10)) == ["x" * 10]
    with pytest.raises(LineTooLong):
        list(bounded_lines([b"x" * 6, b"x" * 5], limit=10))


def test_an_error_in_the_reader_thread_ends_the_answer_with_the_text_kept(tmp_path: Path, monkeypatch) -> None:
    def failing(chunks, limit):
        lines = bounded_lines(chunks, limit)
        yield next(lines)
        raise MemoryError

    monkeypatch.setattr(remote_stream, "bounded_lines", failing)
    with FakeOpenAI(Script(raw=[sse(delta("Hel")), sse(delta("lo", "stop")), DONE])) as server:
        loaded, _, _ = ask(server, tmp_path)
    answer = loaded.messages[-1]
    assert answer.text == "Hel"
    assert answer.error == f"reading the answer from {server.url} failed (MemoryError)"


def test_a_reader_thread_that_dies_without_a_word_ends_the_answer(tmp_path: Path, monkeypatch) -> None:
    put = remote_stream.RemoteStream._put

    def no_memory(self, event: tuple[str, str]) -> bool:
        if event[0] in ("open", "line"):
            return put(self, event)
        raise MemoryError  # not even the last event can be queued

    monkeypatch.setattr(remote_stream.RemoteStream, "_put", no_memory)
    with FakeOpenAI(Script(raw=[sse(delta("Hel")), b"data: " + b"x" * 65536], forever=b"x" * 65536)) as server:
        loaded, _, _ = ask(server, tmp_path)
    answer = loaded.messages[-1]
    assert answer.text == "Hel" and answer.error == f"reading the answer from {server.url} failed"


def test_a_server_listing_unusable_models_is_refused_and_a_long_error_body_is_not_read_whole() -> None:
    stream = RemoteBackend("http://127.0.0.1:9")
    assert remote._model_id("fake-vl") and not remote._model_id("x" * 1000) and not remote._model_id("a\x1bb")
    assert not remote._model_id(5) and not remote._model_id("")
    assert remote._count(4096) and not remote._count(True) and not remote._count(-1) and not remote._count(10**40)
    stream.close()
    with FakeOpenAI(Script(status=500, error="boom " * 1_000_000)) as server:
        with pytest.raises(remote.RemoteError) as failed:
            RemoteBackend(server.url).stream([remote.Message("user", "hi")], GenerationSettings())
    assert len(str(failed.value)) < 500 and "HTTP 500" in str(failed.value)


def test_the_stream_error_is_still_a_generation_error() -> None:
    from engine.errors import GenerationError

    assert issubclass(RemoteStreamError, GenerationError)
