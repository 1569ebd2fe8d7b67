"""The app never writes a transcript that it would refuse to read (issue 20).

One conversation holds every kind of message the app makes, each at the
transcript format's limits, made through the app's own ways of making them
(``add_user``, ``add_answer`` with whatever a backend reports, the partial
answer autosave journals, ``/system``, ``/set``, attaching a picture): the
longest text each accepts, answers and errors longer than that, stats with
every invalid value a server or another engine could report, pictures from a
file and from memory, up to the most messages it takes. Saved every way the
app writes a transcript (``/save``, ``/save --embed``, the web download, the
autosave journal), each file reads back, message for message.

If a producer could go past a reader's limit (a 1,048,577-character answer
from a server, a negative token count, one message too many), this fails.
"""

from __future__ import annotations

import io
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dsvl_tui.commands import builtin as builtin_commands  # noqa: F401 - fills the registry
from dsvl_tui.commands.registry import CommandError, registry
from dsvl_tui.core.conversation import Attachment, Conversation, LimitError
from dsvl_tui.storage.journal import Journal
from dsvl_tui.storage.transcript import format as transcript_format
from dsvl_tui.storage.transcript import load_transcript, save_transcript, transcript_bytes
from dsvl_tui.storage.transcript.read import read
from engine.errors import ImageError
from engine.types import GenerationStats

# What a backend may put in a stats field: wrong kinds, out of range, not finite, numpy scalars.
BAD_VALUES: list[Any] = [-1, -0.5, 10**400, 2**63, float("nan"), float("inf"), -float("inf"), True, "12", [3], None,
                         "not a reason"]


def _numpy_values() -> list[Any]:
    import numpy as np

    return [np.int64(-4), np.int64(5), np.float32(1.5), np.float64(float("nan"))]


class Session:
    """The least of a front end the commands used here need."""

    frontend = "repl"

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.notices: list[str] = []

    def info(self, message: str) -> None:
        self.notices.append(message)

    def error(self, message: str) -> None:
        self.notices.append(message)

    def refresh(self) -> None:
        pass

    def is_generating(self) -> bool:
        return False


def _picture(path: Path) -> Path:
    Image.new("RGB", (6, 4), "teal").save(path)
    return path


def _longest(limit: int, accepts) -> str:
    """The longest text ``accepts`` takes; checks that one character more is refused."""
    text = "w" * limit
    assert accepts(text)
    assert not accepts(text + "w")
    return text


def _every_kind(tmp_path: Path) -> Conversation:
    limit = transcript_format.MAX_TEXT_CHARS
    conv = Conversation(model="tiny")
    session = Session(conv)

    def system_takes(text: str) -> bool:
        try:
            registry.run(session, "/system " + text)
        except CommandError:
            return False
        return conv.system == text

    _longest(limit, system_takes)  # the longest system prompt /system takes stays set
    registry.run(session, f"/set seed {10**30}")
    registry.run(session, "/set max_new_tokens 100000000")

    def user_takes(text: str) -> bool:
        try:
            conv.add_user(text)
        except LimitError:
            return False
        conv.messages.pop()  # taken back: the real one below has pictures
        return True

    longest = _longest(limit, user_takes)
    picture = _picture(tmp_path / "photo.png")
    conv.pending.append(Attachment.from_path(picture))
    memory = io.BytesIO()
    Image.new("RGB", (3, 3), "orange").save(memory, "PNG")
    conv.pending.append(Attachment(data=memory.getvalue(), name="pasted.png"))
    conv.add_user(longest)
    # An answer past the limit (a server's endless stream), with a whole set of invalid stats.
    conv.add_answer("a" * (limit + 1), GenerationStats(prompt_tokens=-5, new_tokens=10**400,  # type: ignore[arg-type]
                                                       tokens_per_second=float("inf"), stop_reason="x"))  # type: ignore[arg-type]
    conv.add_user("")  # pictures only
    conv.messages[-1].images.append(Attachment.from_path(picture))
    # What autosave journals while an answer streams: a stopped answer, as long as the stream was.
    conv.messages.append(conv.with_partial_answer("p" * (limit * 2)).messages[-1])
    conv.add_user("and now?")
    conv.add_answer("", GenerationStats(stop_reason="error", error="e" * (limit * 2)), error="e" * (limit * 2))
    # Each stats field with each bad value, one answer each.
    for spec in fields(GenerationStats):
        for value in [*BAD_VALUES, *_numpy_values()]:
            conv.add_user(f"{spec.name} = {value!r:.20}")
            conv.add_answer("ok", GenerationStats(**{spec.name: value}))
    # Then as many messages as it takes.
    turn = 0
    while True:
        try:
            conv.add_user(f"turn {turn}")
        except LimitError:
            break
        conv.add_answer(f"answer {turn}", GenerationStats(new_tokens=2, stop_reason="eos"))
        turn += 1
    assert len(conv.messages) >= transcript_format.MAX_MESSAGES - 1
    return conv


def _same(read_back: Conversation, made: Conversation) -> None:
    assert len(read_back.messages) == len(made.messages)
    for back, message in zip(read_back.messages, made.messages, strict=True):
        assert (back.role, back.text, back.stopped, back.error) == (message.role, message.text, message.stopped,
                                                                    message.error)
        assert back.stats == message.stats
        assert [a.missing for a in back.images] == [False] * len(message.images)
    assert read_back.system == made.system and read_back.title == made.title
    assert read_back.settings == made.settings


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_kind_of_message_at_the_limits_is_written_and_read_back(tmp_path: Path) -> None:
    conv = _every_kind(tmp_path)
    for message in conv.messages:
        if message.stats is not None:
            for value in vars(message.stats).values():
                assert not isinstance(value, float) or math.isfinite(value)
    _same(load_transcript(save_transcript(conv, tmp_path / "saved.json")), conv)
    _same(load_transcript(save_transcript(conv, tmp_path / "embedded.json", embed_images=True)), conv)
    download = tmp_path / "download.json"
    download.write_bytes(transcript_bytes(conv))
    _same(read(download)[0], conv)
    journal = Journal(tmp_path / "journal")
    assert journal.record(conv) is None
    _same(journal.open(conv.id), conv)


@pytest.mark.timeout(600)
def test_at_lowered_limits_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The producers read the format's limits, not copies of them: lowered there, they follow."""
    monkeypatch.setattr(transcript_format, "MAX_TEXT_CHARS", 300)
    monkeypatch.setattr(transcript_format, "MAX_MESSAGES", 800)
    test_every_kind_of_message_at_the_limits_is_written_and_read_back(tmp_path)


def test_a_picture_too_large_to_embed_is_refused_when_attached(tmp_path: Path, monkeypatch) -> None:
    picture = _picture(tmp_path / "photo.png")
    monkeypatch.setattr(transcript_format, "MAX_IMAGE_BYTES", picture.stat().st_size - 1)
    with pytest.raises(ImageError):
        Attachment.from_path(picture)


# --- the front ends say so, keep the text, and go on ---------------------------------------------------------------


@pytest.mark.timeout(120)
def test_the_repl_refuses_a_message_longer_than_a_transcript_holds_and_reads_on(monkeypatch) -> None:
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from dsvl_tui.core.options import Options
    from dsvl_tui.repl.app import Repl

    monkeypatch.setattr(transcript_format, "MAX_TEXT_CHARS", 50)
    out, err = io.StringIO(), io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text("x" * 51 + "\r/set temperature 0\r\x04")
        repl = Repl(Options(endpoint="http://127.0.0.1:9"), input=pipe, output=DummyOutput(), stdout=out,
                    stderr=err, colour=False)
        repl.run()
    assert "error: the message is 51 characters, more than the 50 a transcript may hold; shorten it" in err.getvalue()
    assert repl.conversation.messages == []
    assert repl.conversation.settings.temperature == 0  # the next line was read


@pytest.mark.timeout(120)
def test_the_app_refuses_a_message_longer_than_a_transcript_holds_and_keeps_it(monkeypatch) -> None:
    from tui_support import notices, ready, run_async, scripted_app, type_line, wait_for

    monkeypatch.setattr(transcript_format, "MAX_TEXT_CHARS", 50)

    @run_async
    async def drive() -> None:
        app = scripted_app()
        async with app.run_test(size=(100, 24)) as pilot:
            await ready(pilot)
            await type_line(pilot, "y" * 51)
            await wait_for(pilot, lambda: notices(app, error=True))
            assert notices(app, error=True)[-1].endswith("more than the 50 a transcript may hold; shorten it")
            assert app.active.conversation.messages == []
            assert app.prompt.text == "y" * 51  # kept, to shorten

    drive()
