"""``/compare``'s compared answer is journaled as it streams (issue 25), as the main answer is: kill -9 while it
streams (the main answer done) leaves it in the journal so far, marked stopped, and resuming that entry shows it;
what the journal holds while both stream has both; a quit journals it at once; between checkpoints it is
throttled as the main one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from process_support import PROCESS_TIMEOUT, kill_9_when
from tui_support import CompareSides, ready, run_async, scripted_app, type_line, wait_for

from dsvl_tui.storage.journal import Journal
from dsvl_tui.tui.widgets import ComparedPair

pytestmark = [pytest.mark.usefixtures("in_tmp"), pytest.mark.slow]  # drives the whole app for seconds a test


def _entry(tmp_path: Path) -> dict | None:
    """The one journal entry as the disk holds it now (None before it is written)."""
    for path in (tmp_path / "data" / "journal").glob("*.json"):
        return json.loads(path.read_text("utf-8"))
    return None


def _answer(tmp_path: Path) -> dict:
    """The journaled answer to the one question ({} before there is one)."""
    entry = _entry(tmp_path)
    return entry["messages"][1] if entry is not None and len(entry["messages"]) > 1 else {}


async def _comparing(pilot, backend: CompareSides) -> None:
    await ready(pilot)
    await type_line(pilot, "/compare --temperature 0.9")
    await wait_for(pilot, lambda: pilot.app.comparing.compared_side() is not None)


def _saves_every(monkeypatch, seconds: float) -> None:
    from dsvl_tui.tui import answering

    monkeypatch.setattr(answering, "PARTIAL_SAVE_SECONDS", seconds)  # the main answer's and the compared one's


@run_async
async def test_a_compared_answer_outlasting_the_main_one_is_journaled_as_it_streams_and_resumes(tmp_path, monkeypatch):
    _saves_every(monkeypatch, 0.0)
    backend = CompareSides(["Quick."], ["Slow", " one", " more"])
    app = scripted_app(backend)
    async with app.run_test(size=(120, 30)) as pilot:
        await _comparing(pilot, backend)
        await type_line(pilot, "hello")
        conversation = app.active.conversation
        await wait_for(pilot, lambda: len(conversation.messages) == 2 and app.queue.for_pane(app.active) is None)
        backend.steps[0].set()
        backend.steps[1].set()
        # What kill -9 would leave now: the main answer done, the compared one so far, stopped.
        await wait_for(pilot, lambda: _answer(tmp_path).get("compared", {}).get("text") == "Slow one")
        journaled = _answer(tmp_path)
        assert (journaled["text"], journaled["stopped"], journaled["compared"]["stopped"]) == ("Quick.", False, True)
        assert conversation.messages[1].compared is None  # the app's own answer gets it once it has ended
        resumed = Journal().open(conversation.id)  # as --resume reads it
        compared = resumed.messages[1].compared
        assert compared is not None and (compared.text, compared.stopped) == ("Slow one", True)
        assert compared.settings is not None and compared.settings.temperature == 0.9
        backend.steps[2].set()
        await wait_for(pilot, lambda: conversation.messages[1].compared is not None)
        await wait_for(pilot, lambda: _answer(tmp_path)["compared"]["stopped"] is False)
        assert _answer(tmp_path)["compared"]["text"] == "Slow one more"
    # What was read mid-stream, resumed: its compared answer beside the main one, stopped where the journal had it.
    app = scripted_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        app.open_conversation(resumed)
        await wait_for(pilot, lambda: app.active.conversation is resumed and bool(app.active.query(ComparedPair)))
        pair = app.active.query_one(ComparedPair)
        await wait_for(pilot, lambda: pair.other.text == "Slow one")
        assert (pair.main.text, pair.other.message.stopped, pair.other.state) == ("Quick.", True, "stopped")


@run_async
async def test_a_quit_while_only_the_compared_answer_streams_journals_it_at_once(tmp_path, monkeypatch):
    _saves_every(monkeypatch, 3600.0)  # no checkpoint comes due: only the quit can journal what it said
    backend = CompareSides(["Quick."], ["Slow", " one"])
    app = scripted_app(backend)
    async with app.run_test(size=(120, 30)) as pilot:
        await _comparing(pilot, backend)
        await type_line(pilot, "hello")
        conversation = app.active.conversation
        await wait_for(pilot, lambda: len(conversation.messages) == 2 and _answer(tmp_path).get("text") == "Quick.")
        assert _answer(tmp_path)["compared"] == {**_answer(tmp_path)["compared"], "text": "", "stopped": True}
        backend.steps[0].set()
        pair = app.active.query_one(ComparedPair)
        await wait_for(pilot, lambda: pair.other.text == "Slow")
        assert _answer(tmp_path)["compared"]["text"] == ""  # throttled as the main answer: not journaled yet
        await pilot.press("ctrl+q")
    compared = _answer(tmp_path)["compared"]
    assert (compared["text"], compared["stopped"]) == ("Slow", True)


@run_async
async def test_both_answers_streaming_are_journaled_together_on_a_quit(tmp_path, monkeypatch):
    _saves_every(monkeypatch, 3600.0)
    backend = CompareSides(["Quick", " answer"], ["Slow", " one"], hold_after=1)
    app = scripted_app(backend)
    async with app.run_test(size=(120, 30)) as pilot:
        await _comparing(pilot, backend)
        await type_line(pilot, "hello")
        backend.steps[0].set()
        await wait_for(pilot, lambda: bool(app.active.query(ComparedPair)))
        pair = app.active.query_one(ComparedPair)
        await wait_for(pilot, lambda: pair.main.text == "Quick" and pair.other.text == "Slow")
        await pilot.press("ctrl+q")
    journaled = _answer(tmp_path)
    assert (journaled["text"], journaled["stopped"]) == ("Quick", True)
    assert (journaled["compared"]["text"], journaled["compared"]["stopped"]) == ("Slow", True)


@run_async
async def test_a_compared_answer_is_never_journaled_on_another_answer_to_its_question(tmp_path, monkeypatch):
    """/regenerate (comparing no more) while the compared answer streams: the new answer is not the one it compares
    with, so no snapshot puts it there."""
    _saves_every(monkeypatch, 0.0)
    backend = CompareSides(["Quick."], ["Slow", " one"])
    app = scripted_app(backend)
    async with app.run_test(size=(120, 30)) as pilot:
        await _comparing(pilot, backend)
        await type_line(pilot, "hello")
        conversation = app.active.conversation
        backend.steps[0].set()
        await wait_for(pilot, lambda: _answer(tmp_path).get("compared", {}).get("text") == "Slow")
        first = conversation.messages[1]
        backend.chunks = ["Again."]
        await type_line(pilot, "/compare off")
        await type_line(pilot, "/regenerate")
        await wait_for(pilot, lambda: len(conversation.messages) == 2 and conversation.messages[1] is not first
                       and app.queue.for_pane(app.active) is None)
        await wait_for(pilot, lambda: _answer(tmp_path).get("text") == "Again.")
        assert "compared" not in _answer(tmp_path)
        assert conversation.messages[1].compared is None
        # The pane was redrawn: the compared answer stopped there, and what it said is kept on its own answer.
        assert first.compared is not None and (first.compared.text, first.compared.stopped) == ("Slow", True)
        backend.steps[1].set()  # too late: it has stopped
    kept = [m for kept in Journal().open(conversation.id).alternatives.values() for m in kept if m.compared]
    assert [(m.text, m.compared.text, m.compared.stopped) for m in kept] == [("Quick.", "Slow", True)]


# The app in a child process, on ``CompareSides``: the main answer done, the compared one held after "Slow one".
CHILD = """
import asyncio
from test_compare_journal import CompareSides, _comparing
from tui_support import scripted_app, type_line, wait_for
from dsvl_tui.tui import answering

answering.PARTIAL_SAVE_SECONDS = 0.0  # each chunk journaled: what the parent waits for comes at once

async def main():
    backend = CompareSides(["Quick."], ["Slow", " one", " more"])
    app = scripted_app(backend)
    async with app.run_test(size=(120, 30)) as pilot:
        await _comparing(pilot, backend)
        await type_line(pilot, "hello")
        backend.steps[0].set()
        backend.steps[1].set()
        await asyncio.Event().wait()  # streaming, held, until the kill

asyncio.run(main())
"""


def test_kill_9_while_the_compared_answer_streams_keeps_it_for_resume(tmp_path):
    here = Path(__file__).resolve().parent
    root = here.parents[1]
    env = {**os.environ, "DSVL_DATA_DIR": str(tmp_path / "data"), "DSVL_CONFIG_DIR": str(tmp_path / "config"),
           "PYTHONPATH": os.pathsep.join([str(root), str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        kill_9_when(child, lambda: _answer_on_disk(tmp_path).get("compared", {}).get("text") == "Slow one",
                    "the journal holding the compared answer so far")
    finally:
        child.kill()
        child.wait(timeout=PROCESS_TIMEOUT)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    journal = Journal()
    [entry] = journal.recent()
    resumed = journal.open(entry)  # as --resume opens it: the killed program's lock went with it
    answer = resumed.messages[1]
    assert (answer.text, answer.stopped) == ("Quick.", False)
    assert answer.compared is not None and (answer.compared.text, answer.compared.stopped) == ("Slow one", True)


def _answer_on_disk(tmp_path: Path) -> dict:
    """As ``_answer``, but a file being replaced (or not written yet) reads as nothing."""
    try:
        return _answer(tmp_path)
    except (OSError, ValueError):
        return {}
