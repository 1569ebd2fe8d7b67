"""The search index behind /find (issue 25): what it finds, how it ranks, and that it is never the source of
truth: missing, corrupt, of another schema or behind the files, it is made again from the journal."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from process_support import PROCESS_TIMEOUT

from dsvl_tui.core.conversation import Attachment, Conversation
from dsvl_tui.storage.autosave import Autosaver
from dsvl_tui.storage.journal import Journal
from dsvl_tui.storage.paths import data_dir
from dsvl_tui.storage.search_index import INDEX_FILE, SCHEMA_VERSION, QueryError, SearchIndex, match_query


def _conversation(*texts: str, title: str = "", pictures: dict[int, list[str]] | None = None) -> Conversation:
    conv = Conversation(title=title or texts[0][:30])
    for number, text in enumerate(texts):
        message = conv.add_user(text) if number % 2 == 0 else conv.add_answer(text)
        for name in (pictures or {}).get(number, []):
            message.images.append(Attachment(name=name))
    return conv


def _journal(*convs: Conversation) -> Journal:
    journal = Journal()
    for conv in convs:
        assert journal.record(conv) is None
    return journal


def _titles(text: str, **kwargs) -> list[str]:
    return [hit.title for hit in SearchIndex().search(text, **kwargs)]


def test_autosaved_conversations_are_indexed_by_the_autosave_worker_after_the_write():
    """The worker journals, calls ``then`` (the app draws the message), then indexes; no sync needed after."""
    conv = _conversation("what lives in a tidepool?", "anemones and hermit crabs")
    order: list[str] = []
    saver = Autosaver()
    put = saver.journal.index.put_journal

    def recording_put(*args, **kwargs):
        order.append(f"index in {threading.current_thread().name}")
        return put(*args, **kwargs)

    saver.journal.index.put_journal = recording_put
    worker = threading.Thread(target=saver.run, name="autosave-worker")
    worker.start()
    saver.save(conv, then=lambda: order.append("then"))
    saver.stop()
    assert saver.join(timeout=PROCESS_TIMEOUT)
    assert order == ["then", "index in autosave-worker"]
    hits = SearchIndex().search("hermit", sync=False)  # there without a sync: the worker put it
    assert [(h.kind, h.path.stem, h.message) for h in hits] == [("journal", conv.id, 1)]
    assert hits[0].snippet == (("anemones and ", False), ("hermit", True), (" crabs", False))


def test_each_journal_write_updates_the_index_and_only_the_messages_that_changed():
    conv = _conversation("first question about volcanoes")
    journal = _journal(conv)
    index = journal.index
    assert index is not None
    rowid = index._connection().execute("SELECT rid FROM msgs WHERE msg=0").fetchone()[0]
    conv.add_answer("magma rises")
    assert journal.record(conv) is None
    assert _titles("magma") == [conv.title]
    assert index._connection().execute("SELECT rid FROM msgs WHERE msg=0").fetchone()[0] == rowid  # untouched
    conv.messages[1].text = "lava flows"  # an answer streaming on, say
    assert journal.record(conv) is None
    assert _titles("magma") == [] and _titles("lava") == [conv.title]
    conv.reset()
    assert journal.record(conv) is None  # no messages: the entry is removed, and so is its index
    assert _titles("volcanoes") == []


def test_ranking_is_bm25_best_first_and_one_result_per_conversation():
    many = _conversation("comet comet comet: the comet's tail", title="all about comets")
    once = _conversation("a long story about the sky " * 20 + "and one comet", title="a story")
    twice = _conversation("comet here", "and another comet there", title="two messages")
    _journal(once, twice, many)
    hits = SearchIndex().search("comet")
    assert [h.title for h in hits] == ["all about comets", "two messages", "a story"]
    assert hits[0].score < hits[1].score < hits[2].score
    assert len(SearchIndex().search("comet", limit=2)) == 2


def test_unicode_words_match_whatever_their_case_and_accents():
    """unicode61: case folded in every cased script; accents removed from Latin letters (remove_diacritics 2).
    A script written without spaces is one word per run: a trailing * finds the start of one."""
    _journal(_conversation("Crème brûlée à Zürich", "Привет, ΣΟΦΊΑ, 我喜欢猫 and Ærøskøbing", title="unicode"))
    for query in ("creme", "BRULEE", "zürich", "zurich", "ПРИВЕТ", "привет", "σοφία", "Crème Brûlée",
                  "我喜欢猫", "我喜*", "ærøskøbing"):
        assert _titles(query) == ["unicode"], query
    assert _titles("crème custard") == []  # every word, in one message


def test_a_word_inside_a_pictures_name_finds_the_message_it_is_attached_to():
    conv = _conversation("what is this?", "a bird", "and this?",
                         pictures={2: ["holiday_beach-2024.png"]}, title="pictures")
    _journal(conv)
    hits = SearchIndex().search("beach")
    assert [(h.title, h.message, h.pictures) for h in hits] == [("pictures", 2, 1)]
    assert ("beach", True) in hits[0].snippet
    assert _titles("holiday 2024") == ["pictures"] and _titles("png") == ["pictures"]


def test_a_trailing_star_is_a_prefix_and_every_other_word_is_whole():
    _journal(_conversation("photosynthesis in plants"))
    assert _titles("photo") == []
    assert _titles("photo*") == ["photosynthesis in plants"]


@pytest.mark.parametrize("query", [
    '"', "AND (", "NOT", "cat OR dog", "NEAR(a b)", "text:cat", "names:beach", "^cat", "-cat", "+cat", "*", "a*b*",
    "'); DROP TABLE convs; --", "\x00cat", "cat\x1b[31m", "\udc80cat", "🐱", "((((", "\"cat\" AND \"dog",
    "c" * 5000, "{text names}: cat", "cat NEAR/2 dog", "\u0301", "ǅ",
])
def test_hostile_query_strings_are_words_and_never_raise_anything_but_a_one_line_query_error(query):
    _journal(_conversation("the cat and the dog are not near"))
    try:
        hits = SearchIndex().search(query)
    except QueryError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(("nothing to find", "too many words"))
        return
    assert all(h.title == "the cat and the dog are not ne" for h in hits)


def test_operators_are_plain_words():
    _journal(_conversation("do NOT touch", title="not"), _conversation("cat or dog", title="or"),
             _conversation("a cat", title="cat only"))
    assert _titles("NOT") == ["not"]
    assert _titles("cat OR dog") == ["or"]  # all three words; OR is not FTS5's OR
    assert match_query('say "hi" AND (') == '"say" """hi""" "AND"'
    with pytest.raises(QueryError):
        match_query('" ( ) * :')


def test_rebuilt_when_the_index_is_missing():
    _journal(_conversation("sourdough starter", title="bread"))
    SearchIndex().delete()
    assert not (data_dir() / INDEX_FILE).exists()
    assert _titles("sourdough") == ["bread"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other schema"])
def test_rebuilt_when_the_index_is_corrupt_or_of_another_schema(damage):
    _journal(_conversation("quantum entanglement", title="physics"))
    path = data_dir() / INDEX_FILE
    SearchIndex().close()
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 200)
    elif damage == "truncated":
        SearchIndex().sync()
        with open(path, "r+b") as handle:
            handle.seek(100)
            handle.write(os.urandom(4000))
    else:
        con = sqlite3.connect(path)
        con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        con.close()
    for name in ("-wal", "-shm"):
        Path(f"{path}{name}").unlink(missing_ok=True)
    assert _titles("entanglement") == ["physics"]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_stale_entries_are_read_again_and_deleted_ones_leave():
    """The files are the truth: a journal entry changed or deleted behind the index's back (another program,
    an update lost to a power cut) is seen by its stamp at the next search."""
    kept, gone = _conversation("glacier ice", title="kept"), _conversation("glacier melt", title="gone")
    journal = _journal(kept, gone)
    assert sorted(_titles("glacier")) == ["gone", "kept"]
    entry = journal.path_for(kept.id)
    doc = json.loads(entry.read_text())
    doc["messages"][0]["text"] = "iceberg calving"
    entry.write_text(json.dumps(doc))  # not through the journal: the index does not hear of it
    journal.path_for(gone.id).unlink()
    assert _titles("glacier") == [] and _titles("iceberg") == ["kept"]


def test_the_index_file_is_private():
    _journal(_conversation("a secret"))
    assert (data_dir() / INDEX_FILE).stat().st_mode & 0o777 == 0o600


def test_a_journal_elsewhere_keeps_no_index_unless_given_one(tmp_path):
    journal = Journal(tmp_path / "elsewhere")
    assert journal.index is None and journal.record(_conversation("anything")) is None
    assert not (data_dir() / INDEX_FILE).exists()


_KILLED_WRITER = """
import sys
from dsvl_tui.core.conversation import Conversation
from dsvl_tui.storage.journal import Journal
journal = Journal()
conv = Conversation(title="survivor")
conv.add_user("the survivor's first words")
journal.record(conv)
print("ready", flush=True)
n = 0
while True:
    n += 1
    conv.add_answer(f"filler answer number {n} " * 30)
    conv.add_user(f"question {n}")
    journal.record(conv)
"""


@pytest.mark.slow
def test_a_kill_9_while_indexing_leaves_a_usable_index():
    """WAL mode: whatever instant the writer dies at, the index opens, checks clean and finds what was there."""
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # let it write for a while: any moment will do, this is not a wait for a condition
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(PROCESS_TIMEOUT)
    con = sqlite3.connect(data_dir() / INDEX_FILE)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert _titles("survivor's first words", sync=False) == ["survivor"]  # what was committed is there
    assert _titles("survivor's first words") == ["survivor"]


def test_a_settled_journal_folder_is_not_scanned_again_until_a_file_lands_in_it(monkeypatch):
    """Each journal write renames a file into the folder, changing its modification time: a folder as the last
    scan left it is not listed again (the staleness check costs a stat), one written since is."""
    _journal(_conversation("first entry about otters"))
    folder = data_dir() / "journal"
    os.utime(folder, ns=(time.time_ns() - 10**10,) * 2)  # settled: older than a coarse clock's tick
    index = SearchIndex()
    index.sync()  # scans, and remembers the folder
    scans = []
    scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: scans.append(path) or scandir(path))
    assert [h.title for h in index.search("otters")] == ["first entry about otters"] and scans == []
    unindexed = Journal(folder)  # the same folder, written by a journal that keeps no index (another program)
    assert unindexed.index is None and unindexed.record(_conversation("second entry about otters")) is None
    assert sorted(h.title for h in index.search("otters")) == ["first entry about otters", "second entry about otters"]
    assert scans == [folder]


def test_an_empty_conversation_journaled_touches_no_index():
    """A new, empty tab is journaled as nothing: the index is not even made for it."""
    assert Journal().record(Conversation()) is None
    assert not (data_dir() / INDEX_FILE).exists()
