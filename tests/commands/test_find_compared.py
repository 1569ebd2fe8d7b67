"""/find and compared answers (issue 25): a word only the compared model said (``/compare``) finds the conversation,
at the answer that carries it, the snippet labelled with the compared model; an index made before compared answers
were indexed is made again."""

from __future__ import annotations

import sqlite3

import pytest
from test_find import Finder

from dsvl_tui.core.conversation import ComparedAnswer, Conversation
from dsvl_tui.storage import transcript
from dsvl_tui.storage.journal import Journal
from dsvl_tui.storage.paths import data_dir
from dsvl_tui.storage.search_index import INDEX_FILE, SCHEMA_VERSION, SearchIndex


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):  # data and config folders: conftest's private_dirs
    monkeypatch.chdir(tmp_path)


def _compared(title: str, question: str, answer: str, other: str, *, model: str = "/models/tiny-b",
              quantize: str = "none") -> Conversation:
    conv = Conversation(title=title)
    conv.add_user(question)
    conv.add_answer(answer).compared = ComparedAnswer(model, other, quantize=quantize)
    conv.add_user("and then?")
    conv.add_answer("nothing more")
    return conv


def test_a_word_only_in_a_compared_answer_finds_the_conversation_at_that_answer():
    Journal().record(_compared("weather", "is it raining?", "no", "nope"))
    target = _compared("birds", "which bird is that?", "a heron", "a cormorant, drying its wings", quantize="int4")
    assert Journal().record(target) is None
    session = Finder()
    session.run("/find cormorant")
    assert [(c.title, c.hit.message, c.hit.compared) for c in session.found] == [("birds", 1, "tiny-b (int4)")]
    snippet = session.found[0].hit.snippet
    assert snippet[0] == ("[tiny-b (int4)] ", False) and ("cormorant", True) in snippet  # whose answer it is
    session.open_found(session.found[0])
    assert session.conversation.id == target.id and session.shown == [(session.conversation, 1)]
    # The main answer's own words are still the main answer's: no label.
    (hit,) = SearchIndex().search("heron")
    assert (hit.message, hit.compared, hit.snippet_text) == (1, "", "a heron")


def test_a_changed_compared_answer_is_indexed_again_and_a_saved_transcript_is_found_by_it(tmp_path):
    conv = _compared("kites", "how do kites fly?", "wind", "lift from the wind")
    journal = Journal()
    assert journal.record(conv) is None and [h.title for h in SearchIndex().search("lift")] == ["kites"]
    conv.messages[1].compared = ComparedAnswer("tiny-c", "a tether and a breeze")
    assert journal.record(conv) is None
    assert SearchIndex().search("lift") == []
    (hit,) = SearchIndex().search("tether")
    assert hit.compared == "tiny-c" and hit.message == 1
    session = Finder()  # a transcript /save writes: indexed from the conversation (``Record.of_conversation``)
    session.conversation = _compared("saved one", "what is a theorbo?", "a lute", "a bass lute with a long neck")
    session.run(f"/save {tmp_path / 'lutes.json'}")
    found = SearchIndex().search("neck", sync=False)
    assert [(h.kind, h.message, h.compared) for h in found] == [("saved", 1, "tiny-b")]
    loaded = transcript.load_transcript(tmp_path / "lutes.json")
    assert loaded.messages[1].compared is not None and loaded.messages[1].compared.text.endswith("long neck")


def test_an_index_made_before_compared_answers_were_indexed_is_made_again():
    """Its entries' stamps are current, so only the schema version can tell it lacks the compared answers."""
    Journal().record(_compared("fish", "what swims there?", "a trout", "a grayling, by the fin"))
    assert [h.title for h in SearchIndex().search("grayling")] == ["fish"]
    SearchIndex().close()
    con = sqlite3.connect(data_dir() / INDEX_FILE)  # as version 2 left it: no compared rows
    con.execute("DELETE FROM fts WHERE rowid IN (SELECT rid FROM msgs WHERE side=1)")
    con.execute("DELETE FROM msgs WHERE side=1")
    con.execute("PRAGMA user_version=2")  # the version before compared answers were indexed
    con.commit()
    con.close()
    assert [h.title for h in SearchIndex().search("grayling")] == ["fish"]
    con = sqlite3.connect(data_dir() / INDEX_FILE)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_a_compared_model_name_from_a_file_is_printable_and_cut():
    hostile = "evil\x1b]52;c;aGk=\x07\x1b[31m" + "x" * 200
    Journal().record(_compared("odd", "question", "answer", "the zebra answer", model=hostile))
    (hit,) = SearchIndex().search("zebra")
    assert "\x1b" not in hit.compared and "\x07" not in hit.snippet_text and len(hit.compared) <= 60
    assert hit.snippet_text.startswith(f"[{hit.compared}] ")
