"""The shared conversation model."""

from __future__ import annotations

from PIL import Image

from dsvl_tui.core.conversation import Attachment, Conversation


def _png(path, colour="red"):
    Image.new("RGB", (4, 4), colour).save(path)
    return path


def test_pending_images_go_with_the_next_message(tmp_path):
    conv = Conversation()
    conv.pending.append(Attachment.from_path(_png(tmp_path / "a.png")))
    user = conv.add_user("What is this?")
    assert [a.label for a in user.images] == ["a.png"] and conv.pending == []
    assert conv.title == "What is this?"
    conv.add_answer("A red square.")
    sent = conv.engine_messages()
    assert [(m.role, m.text) for m in sent] == [("user", "What is this?"), ("assistant", "A red square.")]
    assert [image.data for image in sent[0].images] == [(tmp_path / "a.png").read_bytes()]  # its checked bytes


def test_missing_images_and_failed_answers_are_not_sent(tmp_path):
    conv = Conversation()
    conv.pending.append(Attachment(path=str(tmp_path / "gone.png"), missing=True))
    conv.add_user("hi")
    conv.add_answer("", error="boom")
    sent = conv.engine_messages()
    assert len(sent) == 1 and sent[0].images == []


def test_undo_regenerate_reset():
    conv = Conversation()
    conv.add_user("one")
    conv.add_answer("1")
    conv.add_user("two")
    conv.add_answer("2")
    assert conv.for_regenerate() and [m.text for m in conv.messages] == ["one", "1", "two"]
    dropped = conv.undo()
    assert [m.text for m in dropped] == ["two"] and [m.text for m in conv.messages] == ["one", "1"]
    assert conv.last_answer().text == "1"
    conv.reset()
    assert conv.is_empty and not conv.for_regenerate()


# --- what is recorded can be written and read back (issue 20) ------------------------------------------------------


def test_an_answer_longer_than_a_transcript_message_is_cut_there_and_says_so():
    from dsvl_tui.storage.transcript import format as transcript_format

    limit = transcript_format.MAX_TEXT_CHARS
    conv = Conversation()
    conv.add_user("go on")
    answer = conv.add_answer("a" * (limit + 1), error="e" * (limit + 5))
    assert len(answer.text) == limit and answer.text.startswith("a" * 1000)
    assert answer.text.endswith(f"[answer cut at {limit:,} characters, the most a transcript holds]")
    assert len(answer.error) == limit and answer.error.endswith(" [cut]")
    assert conv.add_answer("b" * limit).text == "b" * limit  # at the limit: whole
    assert len(conv.with_partial_answer("c" * (limit * 2)).messages[-1].text) == limit  # the journaled copy too


def test_a_message_longer_than_a_transcript_holds_is_refused_and_nothing_changes(tmp_path):
    import pytest

    from dsvl_tui.core.conversation import LimitError
    from dsvl_tui.storage.transcript import format as transcript_format

    conv = Conversation()
    conv.pending.append(Attachment.from_path(_png(tmp_path / "a.png")))
    with pytest.raises(LimitError, match="more than the 1,048,576 a transcript may hold"):
        conv.add_user("x" * (transcript_format.MAX_TEXT_CHARS + 1))
    assert conv.messages == [] and len(conv.pending) == 1 and conv.title == ""
    conv.add_user("x" * transcript_format.MAX_TEXT_CHARS)
    assert len(conv.messages) == 1 and conv.pending == []


def test_a_conversation_takes_no_message_it_has_no_room_to_answer(monkeypatch):
    import pytest

    from dsvl_tui.core.conversation import LimitError
    from dsvl_tui.storage.transcript import format as transcript_format

    monkeypatch.setattr(transcript_format, "MAX_MESSAGES", 5)
    conv = Conversation()
    for turn in range(2):
        conv.add_user(f"q{turn}")
        conv.add_answer(f"a{turn}")
    with pytest.raises(LimitError, match="holds 4 messages, and a transcript at most 5; /new starts another"):
        conv.add_user("one more")
    assert len(conv.messages) == 4


def test_stats_are_recorded_as_a_transcript_reads_them():
    import math

    import numpy as np

    from engine.types import GenerationStats

    stats = GenerationStats(prompt_tokens=-3, new_tokens=10**400, time_to_first_token=float("nan"),
                            tokens_per_second=np.float32(2.5), total_seconds=-1.0, stop_reason="exploded",  # type: ignore[arg-type]
                            error=5, dropped_turns=True, reused_tokens=np.int64(7),  # type: ignore[arg-type]
                            evicted_contexts=float("inf"))  # type: ignore[arg-type]
    conv = Conversation()
    conv.add_user("hi")
    recorded = conv.add_answer("x", stats).stats
    assert recorded is not stats and stats.prompt_tokens == -3  # the backend's object is left alone
    counts = (recorded.prompt_tokens, recorded.new_tokens, recorded.dropped_turns, recorded.evicted_contexts)
    assert counts == (0, 0, 0, 0)
    assert recorded.reused_tokens == 7 and type(recorded.reused_tokens) is int
    assert recorded.tokens_per_second == 2.5 and type(recorded.tokens_per_second) is float
    assert recorded.time_to_first_token is None and recorded.total_seconds == 0.0
    assert recorded.stop_reason is None and recorded.error is None
    assert not math.isnan(recorded.total_seconds)
    assert conv.add_answer("y", None).stats is None


def test_a_picture_larger_than_a_transcript_embeds_is_refused_when_attached(tmp_path, monkeypatch):
    import pytest

    from dsvl_tui.storage.transcript import format as transcript_format
    from engine.errors import ImageError

    picture = _png(tmp_path / "big.png")
    monkeypatch.setattr(transcript_format, "MAX_IMAGE_BYTES", picture.stat().st_size - 1)
    with pytest.raises(ImageError, match="big.png: larger than the 0 MB a transcript holds for one picture"):
        Attachment.from_path(picture)
    monkeypatch.setattr(transcript_format, "MAX_IMAGE_BYTES", picture.stat().st_size)
    assert Attachment.from_path(picture).name == "big.png"
