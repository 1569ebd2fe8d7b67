"""/find (issue 25): the command against a recording session, in the plain REPL, and `dsvl-chat find` from the
shell (its --json, and that it imports no torch)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from process_support import PROCESS_TIMEOUT
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from test_commands import Recorder

from dsvl_tui.commands.registry import CommandError, registry
from dsvl_tui.core.conversation import Attachment, Conversation
from dsvl_tui.core.options import Options
from dsvl_tui.repl.app import Repl
from dsvl_tui.storage import transcript
from dsvl_tui.storage.journal import Journal
from dsvl_tui.storage.paths import data_dir
from dsvl_tui.storage.search_index import INDEX_FILE, SearchIndex


class Finder(Recorder):
    """The recording session, with what /find asks of a front end."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list = []
        self.open_found = None
        self.shown: list[tuple[Conversation, int]] = []

    def choose_found(self, found, open, query) -> None:
        self.found, self.open_found = list(found), open

    def show_message(self, conversation, index) -> None:
        self.shown.append((conversation, index))


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):  # data and config folders: conftest's private_dirs
    monkeypatch.chdir(tmp_path)


def _journaled(title: str, *texts: str, picture: str = "") -> Conversation:
    conv = Conversation(title=title)
    for number, text in enumerate(texts):
        message = conv.add_user(text) if number % 2 == 0 else conv.add_answer(text)
        if picture and number == 0:
            message.images.append(Attachment(name=picture))
    assert Journal().record(conv) is None
    return conv


def test_find_lists_title_date_pictures_and_snippet_and_opens_at_the_message():
    _journaled("weather", "is it raining?", "no")
    target = _journaled("trip", "plan a trip", "sure", "what about the lighthouse at dawn?", "go early",
                        picture="map_of_coast.png")
    session = Finder()
    session.run("/find lighthouse")
    assert [(c.title, c.hit.message) for c in session.found] == [("trip", 2)]
    choice = session.found[0]
    assert choice.detail.endswith(", 1 picture") and choice.detail[:4].isdigit()  # "2026-12-07 03:38, 1 picture"
    assert ("lighthouse", True) in choice.hit.snippet
    session.open_found(choice)
    opened = session.conversation
    assert opened.id == target.id and session.shown == [(opened, 2)]
    assert session.notices[-1].startswith("resumed trip")
    session.run("/find --open 1 coast")  # the picture's name; the REPL's way to open one
    assert session.shown[-1] == (session.conversation, 0)


def test_find_says_when_nothing_is_found_and_refuses_no_words():
    _journaled("weather", "is it raining?")
    SearchIndex().delete()
    session = Finder()
    session.run("/find snow")
    assert session.notices[0].startswith("building the search index")  # a rebuild may take seconds: said first
    assert session.notices[-1] == "nothing found for snow" and session.found == []
    session.run("/find snow")
    assert len(session.notices) == 3  # built once
    for line, problem in [("/find", "usage: /find WORDS"), ('/find "', "nothing to find"),
                          ("/find --open x rain", "usage: /find --open N WORDS"),
                          ("/find --open 3 raining", "no conversation 3; /find raining lists 1")]:
        with pytest.raises(CommandError) as error:
            session.run(line)
        assert str(error.value).startswith(problem), line
    session.run("/find AND (")  # operators are words: nothing found, no error
    assert session.notices[-1] == "nothing found for AND ("


def test_saved_and_loaded_transcripts_are_found(tmp_path):
    """/save and /load index the transcript (the app knows of no other); one not in the journal is found as
    a saved file and opens as /load opens it."""
    session = Finder()
    session.conversation.add_user("notes about the harpsichord")
    session.conversation.add_answer("it plucks strings")
    session.run(f"/save {tmp_path / 'music.json'}")
    found = SearchIndex().search("harpsichord", sync=False)
    assert [(h.kind, h.path) for h in found] == [("saved", tmp_path / "music.json")]
    other = Conversation(title="elsewhere")
    other.add_user("a theremin is played without touch")
    transcript.save_transcript(other, tmp_path / "other.json")  # not through /save: not indexed yet
    assert SearchIndex().search("theremin") == []
    session.run(f"/load {tmp_path / 'other.json'}")
    hits = SearchIndex().search("theremin")
    assert [(h.kind, h.path) for h in hits] == [("saved", tmp_path / "other.json")]
    fresh = Finder()
    fresh.run("/find theremin")
    fresh.open_found(fresh.found[0])
    assert fresh.conversation.messages[0].text == "a theremin is played without touch"
    assert fresh.notices[-1].startswith(f"opened {tmp_path / 'other.json'}") and fresh.shown[-1][1] == 0


def test_a_saved_transcript_that_is_also_a_journal_entry_is_listed_once():
    session = Finder()
    conv = session.conversation
    conv.add_user("the zeppelin question")
    session.run("/save twice.json")
    assert Journal().record(conv) is None  # the app journals it too, with its saved_path
    hits = SearchIndex().search("zeppelin")
    assert [h.kind for h in hits] == ["journal"]


def test_the_repl_prints_the_list_and_opens_one_at_the_message():
    _journaled("first", "the ocelot sleeps", "by day")
    _journaled("second", "hello", "hi", "an ocelot ocelot hunts", "at night")
    out, err = io.StringIO(), io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text("/find ocelot\r/find --open 1 ocelot\r\x04")
        repl = Repl(Options(model="tiny"), engine_factory=lambda model, progress: None, input=pipe,
                    output=DummyOutput(), stdout=out, stderr=err, colour=False)
        repl.run()
    text = err.getvalue()
    listed = text.split("found in 2 conversations (/find --open N ocelot opens one):\n")[1].splitlines()
    assert listed[0].startswith("  1. second (") and listed[1] == "     an ocelot ocelot hunts"
    assert listed[2].startswith("  2. first (") and listed[3] == "     the ocelot sleeps"
    assert "message 3 of 4:\nyou: an ocelot ocelot hunts" in text
    assert repl.conversation.messages[2].text == "an ocelot ocelot hunts"


def test_find_is_one_registry_command_for_every_front_end():
    command = registry.get("find")
    assert command is not None and command.frontends == frozenset({"tui", "repl"})


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = ("import sys, json\nfrom dsvl_tui.cli import main\n"
            f"try:\n    main({list(args)!r})\nexcept SystemExit as e:\n    code = e.code\n"
            "heavy = [m for m in ('torch', 'transformers', 'textual') if m in sys.modules]\n"
            "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=PROCESS_TIMEOUT)


@pytest.mark.slow
def test_the_cli_finds_with_json_and_imports_no_torch():
    conv = _journaled("kites", "how do kites fly?", "wind lifts the \x1b[31mkite\x1b[0m", picture="red_kite.jpg")
    proc = _cli("find", "kite", "--json")
    status = json.loads(proc.stderr.strip().splitlines()[-1])
    assert status == {"code": 0, "heavy": []}, proc.stderr
    result = json.loads(proc.stdout)
    assert result["query"] == "kite"
    (hit,) = result["results"]
    assert (hit["title"], hit["kind"], hit["id"], hit["pictures"]) == ("kites", "journal", conv.id, 1)
    assert hit["message"] == 1 and "\x1b" not in hit["snippet"] and hit["snippet"] == "wind lifts the kite"
    assert [hit["snippet"][a:b] for a, b in hit["matches"]] == ["kite"]
    listed = _cli("find", "kites")
    assert listed.stdout.startswith("  1. kites (") and "how do kites fly?" in listed.stdout
    nothing, usage = _cli("find", "parachute"), _cli("find", '"')
    assert json.loads(nothing.stderr.splitlines()[-1])["code"] == 1 and "nothing found" in nothing.stderr
    assert json.loads(usage.stderr.splitlines()[-1])["code"] == 2 and "error: nothing to find" in usage.stderr


def test_an_index_that_cannot_be_made_never_stops_autosave_and_find_says_why_in_one_line():
    (Path(data_dir()) / INDEX_FILE).mkdir(parents=True)  # a folder where the index file goes
    conv = _journaled("kept anyway", "the journal still works")
    assert Journal().path_for(conv.id).is_file()
    session = Finder()
    with pytest.raises(CommandError) as error:
        session.run("/find journal")
    assert str(error.value).startswith("cannot search (") and "\n" not in str(error.value)
