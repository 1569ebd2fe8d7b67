"""The shared conversation model."""

from __future__ import annotations

from PIL import Image

from dsvl_tui.conversation import Attachment, Conversation


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
