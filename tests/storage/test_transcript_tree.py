"""Transcripts hold the conversation's tree (version 2): the current path in ``messages``, the branches
/edit and /regenerate kept in ``branches``; version-1 files still read; exports write the current path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from dsvl_tui.core import branches
from dsvl_tui.core.conversation import Attachment, Conversation, LimitError
from dsvl_tui.storage.journal import Journal
from dsvl_tui.storage.transcript import (
    TranscriptError,
    export_markdown,
    load_transcript,
    missing_images,
    save_transcript,
)
from dsvl_tui.storage.transcript import format as transcript_format


def branched(folder: Path | None = None) -> Conversation:
    """q1 a1 q2 with two answers (a2, then a2b from /regenerate), and q2 edited into q2e with its answer,
    which is the current path. With ``folder``, the first q2 holds a picture."""
    conv = Conversation(created=1714564800.0)
    conv.add_user("q1")
    conv.add_answer("a1")
    if folder is not None:
        path = folder / "photo.png"
        Image.new("RGB", (4, 4), "red").save(path)
        conv.pending.append(Attachment.from_path(path))
    conv.add_user("q2")
    conv.add_answer("a2")
    assert conv.for_regenerate()
    conv.add_answer("a2b")
    branches.detach(conv, 2)  # /edit 2, then the edited message sent
    conv.add_user("q2e")
    conv.add_answer("a2e")
    return conv


def shape(conv: Conversation) -> list[tuple[bool, list[tuple[str, str]]]]:
    """Each branch as (current?, [(id, text), ...])."""
    return [(b.current, [(m.id, m.text) for m in b.messages]) for b in branches.branches(conv)]


def texts(conv: Conversation) -> list[str]:
    return [m.text for m in conv.messages]


def test_a_saved_tree_loads_back_the_same_and_saves_the_same_bytes(tmp_path):
    conv = branched(tmp_path)
    assert [[t for _, t in path] for _, path in shape(conv)] == [
        ["q1", "a1", "q2", "a2"], ["q1", "a1", "q2", "a2b"], ["q1", "a1", "q2e", "a2e"]]
    path = save_transcript(conv, tmp_path / "chat.json")
    loaded = load_transcript(path)
    assert shape(loaded) == shape(conv) and texts(loaded) == ["q1", "a1", "q2e", "a2e"]
    assert missing_images(loaded) == 0
    first = json.loads(path.read_text("utf-8"))
    save_transcript(loaded, path)
    again = json.loads(path.read_text("utf-8"))
    first.pop("updated"), again.pop("updated")
    assert again == first


def test_the_document_keeps_the_path_in_messages_and_the_rest_in_branches_parents_first(tmp_path):
    conv = branched(tmp_path)
    doc = json.loads(save_transcript(conv, tmp_path / "chat.json").read_text("utf-8"))
    assert doc["version"] == 2 == transcript_format.VERSION
    assert [m["text"] for m in doc["messages"]] == ["q1", "a1", "q2e", "a2e"]
    ids = [m["id"] for m in doc["messages"]]
    kept = {m["text"]: m for m in doc["branches"]}
    assert [m["text"] for m in doc["branches"]] == ["q2", "a2", "a2b"]
    assert kept["q2"]["parent"] == ids[1] and kept["a2"]["parent"] == kept["a2b"]["parent"] == kept["q2"]["id"]
    assert kept["q2"]["images"][0]["path"].startswith("chat.images/")  # a branch's picture is saved too
    conv.branch_focus = None
    branches.switch_to(conv, 1)
    doc = json.loads(save_transcript(conv, tmp_path / "chat.json").read_text("utf-8"))
    assert [m["text"] for m in doc["messages"]] == ["q1", "a1", "q2", "a2"]
    first = next(m for m in doc["branches"] if m["text"] == "q2e")
    assert first["parent"] == ids[1]


def test_a_branch_from_the_first_message_has_a_null_parent(tmp_path):
    conv = Conversation()
    conv.add_user("first")
    conv.add_answer("one")
    branches.detach(conv, 0)
    conv.add_user("first, edited")
    doc = json.loads(save_transcript(conv, tmp_path / "c.json").read_text("utf-8"))
    assert [(m["text"], m["parent"]) for m in doc["branches"]] == [("first", None), ("one", doc["branches"][0]["id"])]
    assert [[t for _, t in path] for _, path in shape(load_transcript(tmp_path / "c.json"))] == [
        ["first", "one"], ["first, edited"]]


def test_markdown_export_writes_the_current_path_only(tmp_path):
    text = export_markdown(branched(), tmp_path / "chat.md").read_text("utf-8")
    assert "q2e" in text and "a2e" in text
    assert "\nq2\n" not in text and "a2b" not in text and "\na2\n" not in text


def test_a_version_1_file_still_reads_as_a_conversation_without_branches(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": "dsvl-chat.transcript", "version": 1, "messages": [
        {"role": "user", "text": "hi", "id": "not looked at in version 1"}, {"role": "assistant", "text": "hello"}],
        "branches": "version 1 has none: ignored, as any key it does not know"}))
    conv = load_transcript(path)
    assert texts(conv) == ["hi", "hello"] and conv.alternatives == {}
    assert len({m.id for m in conv.messages}) == 2  # ids made on loading, for branches made from here
    conv.add_user("more")
    save_transcript(conv, path)
    assert json.loads(path.read_text("utf-8"))["version"] == 2


def _v2(**extra) -> dict:
    return {"format": "dsvl-chat.transcript", "version": 2, "messages": [
        {"id": "u1", "role": "user", "text": "hi"}, {"id": "a1", "role": "assistant", "text": "hello"}], **extra}


BROKEN_TREES = [
    ({"branches": [{"id": "b1", "role": "assistant", "text": "x", "parent": "nobody"}]},
     "branches[0].parent: no message has the id 'nobody'"),
    ({"branches": [{"id": "b1", "role": "assistant", "text": "x"}]}, "branches[0].parent: missing"),
    ({"branches": [{"id": "b1", "role": "user", "text": "x", "parent": "b2"},
                   {"id": "b2", "role": "assistant", "text": "y", "parent": "b1"}]},
     "branches[0].parent: its parents lead back to itself"),
    ({"branches": [{"id": "u1", "role": "assistant", "text": "x", "parent": "u1"}]},
     "branches[0].id: 'u1' is the id of an earlier message too"),
    ({"branches": [{"id": "a b", "role": "assistant", "text": "x", "parent": "u1"}]},
     "branches[0].id: expected 1 to 64 letters, digits"),
    ({"branches": {"id": "b1"}}, "branches: expected an array, got object"),
    ({"branches": [{"id": None, "role": "assistant", "text": "x", "parent": "u1"}]},
     "branches[0].id: expected a string, got null"),
    ({"branches": [{"id": 7, "role": "assistant", "text": "x", "parent": "u1"}]},
     "branches[0].id: expected a string, got integer 7"),
    ({"branches": [{"id": "b1", "role": "assistant", "text": "x", "parent": 3}]},
     "branches[0].parent: expected a string or null, got integer 3"),
    ({"branches": [{"id": "b1", "role": "robot", "text": "x", "parent": "u1"}]}, "branches[0].role: expected"),
]


@pytest.mark.parametrize(("extra", "expected"), BROKEN_TREES)
def test_a_broken_tree_is_refused_in_one_line_naming_the_field(tmp_path, extra, expected):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_v2(**extra)))
    with pytest.raises(TranscriptError) as caught:
        load_transcript(path)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_branches_count_toward_the_message_limit_when_made_and_when_read(tmp_path, monkeypatch):
    monkeypatch.setattr(transcript_format, "MAX_MESSAGES", 5)
    conv = Conversation()
    conv.add_user("q")
    conv.add_answer("a")
    conv.for_regenerate()
    conv.add_answer("b")
    conv.for_regenerate()
    conv.add_answer("c")  # 4 messages: q and three answers
    with pytest.raises(LimitError, match="holds 4 messages \\(its branches included\\), and a transcript at most 5"):
        conv.add_user("one more turn")
    conv.for_regenerate()
    conv.add_answer("d")
    with pytest.raises(LimitError):
        conv.for_regenerate()
    assert texts(conv) == ["q", "d"]  # refused before anything changed
    save_transcript(conv, tmp_path / "full.json")
    assert load_transcript(tmp_path / "full.json").message_count() == 5
    path = tmp_path / "over.json"
    path.write_text(json.dumps(_v2(branches=[
        {"role": "assistant", "text": str(n), "parent": "u1"} for n in range(4)])))
    with pytest.raises(TranscriptError, match="branches: 6 messages with the branches is more than the 5"):
        load_transcript(path)


def test_the_journal_keeps_the_tree_and_the_branches_pictures(tmp_path):
    conv = branched(tmp_path)
    journal = Journal(tmp_path / "journal")
    assert journal.record(conv) is None
    (tmp_path / "photo.png").unlink()  # the picture of a message now on a branch: the journal's copy stands in
    reopened = journal.open(conv.id)
    assert shape(reopened) == shape(conv)
    branches.switch_to(reopened, 1)
    assert texts(reopened) == ["q1", "a1", "q2", "a2"]
    picture = reopened.messages[2].images[0]
    assert not picture.missing and reopened.engine_messages()[2].images[0].data


def test_the_documented_example_is_a_version_2_transcript_that_loads(tmp_path):
    docs = (Path(__file__).resolve().parents[2] / "docs" / "transcripts.md").read_text("utf-8")
    example = docs.split("## A complete example", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "chat.json"
    path.write_text(example, "utf-8")
    conv = load_transcript(path)  # its picture is not there: it loads marked missing
    assert json.loads(example)["version"] == transcript_format.VERSION
    assert [m.id for m in conv.messages] == [m["id"] for m in json.loads(example)["messages"]]


def test_after_editing_the_first_message_the_journal_and_save_keep_the_branches(tmp_path):
    """/edit 1 empties the current path until the new version is sent: the conversation is not empty (a kill
    then, or /load into its pane, must not lose it)."""
    conv = Conversation()
    conv.add_user("only question")
    conv.add_answer("only answer")
    journal = Journal(tmp_path / "journal")
    assert journal.record(conv) is None
    branches.detach(conv, 0)
    assert conv.messages == [] and not conv.is_empty
    assert journal.record(conv) is None
    reopened = journal.open(conv.id)
    assert reopened.messages == [] and [[m.text for m in b.messages] for b in branches.branches(reopened)] == [
        ["only question", "only answer"]]
    assert load_transcript(save_transcript(conv, tmp_path / "c.json")).message_count() == 2
