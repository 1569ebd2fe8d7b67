"""Autosave: the journal records every conversation and survives the process being killed."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from dsvl_tui import atomic
from dsvl_tui.conversation import Attachment, Conversation
from dsvl_tui.journal import Journal, JournalEntry
from dsvl_tui.transcript import TranscriptError, save_transcript
from engine.types import GenerationStats

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DSVL_DATA_DIR", str(tmp_path / "data"))


def _png(path: Path, colour: str = "red") -> Path:
    Image.new("RGB", (4, 4), colour).save(path)
    return path


def _conversation(tmp_path: Path, title: str = "hello") -> Conversation:
    conv = Conversation(model="tiny")
    conv.pending.append(Attachment.from_path(_png(tmp_path / f"{title}.png")))
    conv.add_user(title)
    conv.add_answer("hi there", GenerationStats(new_tokens=2, stop_reason="eos"))
    return conv


def test_record_recent_and_open(tmp_path):
    journal = Journal()
    assert journal.directory == tmp_path / "data" / "journal"
    conv = _conversation(tmp_path)
    assert journal.record(conv) is None
    [entry] = journal.recent()
    assert (entry.id, entry.title, entry.message_count, entry.model) == (conv.id, "hello", 2, "tiny")
    assert entry.updated == pytest.approx(conv.updated, abs=1e-3)
    opened = journal.open(entry)
    assert opened.id == conv.id and opened.path is None  # never the journal file itself
    assert [(m.role, m.text, m.stats) for m in opened.messages] == [(m.role, m.text, m.stats) for m in conv.messages]
    # Recording the reopened conversation updates the same entry.
    opened.add_user("again")
    journal.record(opened)
    assert [e.message_count for e in journal.recent()] == [3]
    assert journal.open(conv.id).messages[-1].text == "again"


def test_images_are_copied_once_and_survive_the_original(tmp_path):
    journal = Journal()
    conv = _conversation(tmp_path)
    journal.record(conv)
    conv.pending.append(Attachment.from_path(tmp_path / "hello.png"))  # the same picture again
    conv.add_user("same picture")
    journal.record(conv)
    store = journal.directory / f"{conv.id}.images"
    assert len(list(store.iterdir())) == 1
    doc = json.loads(journal.path_for(conv.id).read_text())
    entry = doc["messages"][0]["images"][0]
    assert entry["source"] == str(tmp_path / "hello.png") and entry["path"].startswith(f"{conv.id}.images/")
    (tmp_path / "hello.png").unlink()
    opened = journal.open(conv.id)
    assert not opened.messages[0].images[0].missing
    assert Path(opened.messages[0].images[0].path).parent == store


def test_the_original_is_used_when_the_journal_copy_is_gone(tmp_path):
    journal = Journal()
    conv = _conversation(tmp_path)
    journal.record(conv)
    for copy in (journal.directory / f"{conv.id}.images").iterdir():
        copy.unlink()
    image = journal.open(conv.id).messages[0].images[0]
    assert not image.missing and image.path == str(tmp_path / "hello.png")


def test_a_saved_conversation_reopens_with_its_file(tmp_path):
    journal = Journal()
    conv = _conversation(tmp_path)
    save_transcript(conv, tmp_path / "mine.json")
    journal.record(conv)
    assert journal.open(conv.id).path == tmp_path / "mine.json"


def test_recent_is_newest_first_limited_and_skips_broken_entries(tmp_path):
    journal = Journal()
    convs = [_conversation(tmp_path, f"c{n}") for n in range(4)]
    for n, conv in enumerate(convs):
        conv.updated = 1714564800 + n
        journal.record(conv)
    (journal.directory / "broken.json").write_text("{not json")
    (journal.directory / "other.json").write_text(json.dumps({"format": "something"}))
    stale = journal.directory / ".x.json.1234abcd.tmp"
    stale.write_text("half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert [e.title for e in journal.recent()] == ["c3", "c2", "c1", "c0"]
    assert [e.title for e in journal.recent(limit=2)] == ["c3", "c2"]
    assert not stale.exists()
    assert Journal(tmp_path / "nowhere").recent() == []


def test_empty_conversations_are_not_kept_and_forget_removes_everything(tmp_path):
    journal = Journal()
    assert journal.record(Conversation()) is None and journal.recent() == []
    conv = _conversation(tmp_path)
    journal.record(conv)
    conv.reset()
    journal.record(conv)  # cleared: its entry goes
    assert journal.recent() == []
    journal.record(_conversation(tmp_path, "second"))
    [entry] = journal.recent()
    journal.forget(entry)
    assert journal.recent() == [] and not (journal.directory / f"{entry.id}.images").exists()
    journal.forget("no-such-id")  # nothing to do, no error


def test_open_of_a_missing_or_broken_entry_is_a_transcript_error(tmp_path):
    journal = Journal()
    with pytest.raises(TranscriptError, match="no such file"):
        journal.open("abc")
    journal.directory.mkdir(parents=True)
    journal.path_for("abc").write_text("[")
    with pytest.raises(TranscriptError, match="not JSON"):
        journal.open(JournalEntry(journal.path_for("abc"), "", 0.0, 0))


def test_odd_ids_become_safe_file_names(tmp_path):
    journal = Journal()
    conv = _conversation(tmp_path)
    conv.id = "../../escape me"
    journal.record(conv)
    [entry] = journal.recent()
    assert entry.path.parent == journal.directory and len(entry.id) == 32


def test_disk_errors_are_returned_not_raised(tmp_path, monkeypatch):
    journal = Journal()
    conv = _conversation(tmp_path)
    assert journal.record(conv) is None
    old = journal.path_for(conv.id).read_bytes()

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full_disk)
    conv.add_user("more")
    problem = journal.record(conv)
    assert problem is not None and "\n" not in problem and problem.endswith("No space left on device")
    assert journal.path_for(conv.id).read_bytes() == old
    monkeypatch.undo()
    (tmp_path / "file").write_text("in the way")
    problem = Journal(tmp_path / "file" / "journal").record(conv)
    assert problem is not None and problem.startswith("autosave failed") and "\n" not in problem


CHILD = """
import sys
from pathlib import Path
from dsvl_tui.conversation import Attachment, Conversation
from dsvl_tui.journal import Journal
from engine.types import GenerationStats

journal = Journal()
conv = Conversation(model="tiny")
conv.pending.append(Attachment.from_path(sys.argv[1]))
for turn in range(3):
    conv.add_user(f"question {turn}")
    assert journal.record(conv) is None
    conv.add_answer(f"answer {turn}", GenerationStats(new_tokens=2, stop_reason="eos"))
    assert journal.record(conv) is None
conv.add_user("question 3")
assert journal.record(conv) is None
answer = conv.add_answer("")
print(conv.id, flush=True)
n = 0
while True:  # the answer being generated, recorded as it grows, until the kill
    answer.text += f"token{n} " * 50
    n += 1
    journal.record(conv)
"""


def test_the_journal_survives_kill_9_in_the_middle_of_an_answer(tmp_path):
    image = _png(tmp_path / "photo.png")
    env = {**os.environ, "DSVL_DATA_DIR": str(tmp_path / "data"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(image)], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        conv_id = child.stdout.readline().strip()
        assert conv_id, child.stderr.read()
        time.sleep(0.3)  # many rewrites of the growing answer
        assert child.poll() is None, child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    journal = Journal(tmp_path / "data" / "journal")
    [entry] = journal.recent()
    conv = journal.open(entry)
    finished = [f"question {t // 2}" if t % 2 == 0 else f"answer {t // 2}" for t in range(6)] + ["question 3"]
    assert [m.text for m in conv.messages[:7]] == finished
    assert len(conv.messages) in (7, 8)
    if len(conv.messages) == 8:
        assert conv.messages[7].text.startswith("token0 ")
    assert not conv.messages[0].images[0].missing
