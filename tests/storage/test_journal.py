"""Autosave: the journal records every conversation and survives the process being killed."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from dsvl_tui.core.conversation import Attachment, Conversation
from dsvl_tui.storage import atomic
from dsvl_tui.storage.journal import Journal, JournalEntry
from dsvl_tui.storage.transcript import TranscriptError, save_transcript
from engine.types import GenerationStats

ROOT = Path(__file__).resolve().parents[2]


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
from dsvl_tui.core.conversation import Attachment, Conversation
from dsvl_tui.storage.journal import Journal
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


@pytest.mark.slow
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


# -- two programs on one conversation, faults ------------------------------------------------

HOLDER = """
import sys, time
from dsvl_tui.storage.journal import Journal
conv = Journal().open(sys.argv[1])
print(conv.id, flush=True)
time.sleep(120)
"""


def _child_env(tmp_path: Path) -> dict:
    return {**os.environ, "DSVL_DATA_DIR": str(tmp_path / "data"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _holder(tmp_path: Path, conv_id: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, conv_id], cwd=tmp_path, env=_child_env(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    opened = child.stdout.readline().strip()
    assert opened == conv_id, child.stderr.read()
    return child


def _entry_without_lock(tmp_path: Path) -> tuple[Journal, Conversation]:
    """A journal entry written as a transcript, so this process holds no lock on it."""
    journal = Journal()
    conv = _conversation(tmp_path)
    journal.directory.mkdir(parents=True)
    save_transcript(conv, journal.path_for(conv.id))
    return journal, conv


@pytest.mark.slow
def test_a_second_program_gets_a_copy_and_the_lock_goes_with_kill_9(tmp_path):
    journal, conv = _entry_without_lock(tmp_path)
    child = _holder(tmp_path, conv.id)
    try:
        copy = journal.open(conv.id)
        assert copy.id != conv.id and [m.text for m in copy.messages] == ["hello", "hi there"]
        assert journal.path_for(copy.id).exists()  # its own entry, journaled at once
        image = copy.messages[0].images[0]
        assert Path(image.path).parent == journal.directory / f"{copy.id}.images"
        # The other program empties its conversation and its image folder goes: the copy keeps its image.
        shutil.rmtree(journal.directory / f"{conv.id}.images")
        (tmp_path / "hello.png").unlink()
        assert not image.missing and Path(image.path).is_file() and copy.engine_messages()[0].images[0].data
        copy.add_user("more")
        assert journal.record(copy) is None
        assert Journal().record(journal.open(conv.id)) is None  # still held: another copy, never the entry
        assert [e.message_count for e in journal.recent() if e.id == conv.id] == [2]
    finally:
        child.kill()
        child.wait(timeout=10)
        child.stdout.close()
        child.stderr.close()
    assert journal.open(conv.id).id == conv.id  # kill -9 released the lock


def test_an_images_folder_another_entry_refers_to_is_kept(tmp_path):
    journal = Journal()
    first = _conversation(tmp_path)
    journal.record(first)
    folder = journal.directory / f"{first.id}.images"
    second = Conversation()
    second.pending.append(Attachment.from_path(next(folder.iterdir())))  # attached from the first's folder
    second.add_user("borrowed")
    journal.record(second)
    first.undo()
    assert journal.record(first) is None and not journal.path_for(first.id).exists()
    assert folder.is_dir()  # the second entry's "source" names it
    second.reset()
    journal.record(second)
    third = _conversation(tmp_path, "third")
    journal.record(third)
    third.reset()
    journal.record(third)
    assert not (journal.directory / f"{third.id}.images").exists()  # nobody else's: removed


def test_a_deleted_original_falls_back_to_the_journal_copy(tmp_path):
    journal = Journal()
    conv = _conversation(tmp_path)
    journal.record(conv)
    original = tmp_path / "hello.png"
    picture = original.read_bytes()
    assert [image.data for image in conv.engine_messages()[0].images] == [picture]
    original.unlink()
    assert [image.data for image in conv.engine_messages()[0].images] == [picture]
    att = conv.messages[0].images[0]
    assert Path(att.stored).parent == journal.directory / f"{conv.id}.images"
    assert att.recover() and att.path == att.stored


def test_stale_temp_files_of_ours_are_swept_from_the_data_folder_only(tmp_path):
    from dsvl_tui.storage.journal import sweep_temp_files

    data = tmp_path / "data"
    images = data / "journal" / "abc.images"
    images.mkdir(parents=True)
    old = time.time() - 120
    stale = [images / ".x.png.0123abcd.tmp", data / "journal" / ".abc.json.deadbeef.tmp",
             data / "saved" / "chat.images" / ".y.jpg.00ff00ff.tmp"]
    kept = [images / ".x.png.89abcdef.tmp",  # young: a writer may be at work
            images / ".notes.tmp", images / "photo.tmp",  # not our naming
            data / "other" / "deep" / ".z.png.0123abcd.tmp",  # not an images folder
            tmp_path / ".outside.png.0123abcd.tmp"]  # outside the data folder
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
        if path != kept[0]:
            os.utime(path, (old, old))
    assert sweep_temp_files() == 3
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert sweep_temp_files(tmp_path / "nowhere") == 0


def test_autosaver_sweeps_writes_in_order_and_calls_back_after_the_write(tmp_path):
    from dsvl_tui.storage.autosave import Autosaver

    stale = tmp_path / "data" / "journal" / "a.images" / ".p.png.0123abcd.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    os.utime(stale, (time.time() - 120, time.time() - 120))
    saver = Autosaver()
    conv = _conversation(tmp_path)
    seen = []
    saver.save(conv, then=lambda: seen.append(Journal().open(conv.id).messages[-1].text))
    saver.save(conv, then=lambda: 1 / 0)  # a failing callback does not end the worker
    saver.save(conv.with_partial_answer("half"), then=lambda: seen.append("done"))
    saver.stop()
    saver.run()
    assert saver.join(0) and seen == ["hi there", "done"] and not stale.exists()
    last = Journal().open(conv.id).messages[-1]
    assert (last.text, last.stopped) == ("half", True)
