"""The app's autosave: a message is journaled before it is drawn, partial answers on quit, SIGTERM and as
they stream; a bug in a handler ends the app with code 1, one line and the crash log."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_support import (
    ScriptedEngine,
    answered,
    ready,
    run_async,
    scripted_app,
    type_line,
    wait_for,
)

from dsvl_tui.tui.widgets import UserMessage

pytestmark = pytest.mark.usefixtures("in_tmp")  # tests/tui/conftest.py: the current folder is the test's own


# --- autosave: journal first, then draw; partial answers on quit, signals and as they stream -----


def _journaled(tmp_path: Path) -> list[dict]:
    import json

    return [json.loads(p.read_text()) for p in sorted((tmp_path / "data" / "journal").glob("*.json"))]


@pytest.mark.slow
@run_async
async def test_a_sent_message_is_journaled_before_it_is_drawn(tmp_path, monkeypatch):
    import time as clock

    from dsvl_tui.storage.journal import Journal

    record = Journal.record

    def slow_record(self, conv, **options):  # a large new image takes this long to copy
        clock.sleep(0.3)
        return record(self, conv, **options)

    monkeypatch.setattr(Journal, "record", slow_record)
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        app.prompt.load_text_at_end("keep me")
        await pilot.press("enter")
        deadline = clock.monotonic() + 60
        while not app.active.query(UserMessage):  # read the journal the moment the message is drawn
            assert clock.monotonic() < deadline, "the message was never drawn"
            await pilot.pause(0.01)
        [entry] = _journaled(tmp_path)
        assert [m["text"] for m in entry["messages"]] == ["keep me"]
        await answered(pilot)


@run_async
async def test_quit_in_the_middle_of_an_answer_journals_it_as_stopped(tmp_path):
    backend = ScriptedEngine(["Half", " and", " the rest"], hold_after=1)
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "question")
        await wait_for(pilot, lambda: app.queue.running is not None and app.queue.running.streamed == ["Half"])
        await pilot.press("ctrl+q")
    [entry] = _journaled(tmp_path)
    question, answer = entry["messages"]
    assert (question["text"], answer["text"], answer["stopped"]) == ("question", "Half", True)


@run_async
async def test_sigterm_in_the_middle_of_an_answer_journals_it_and_ends_the_app(tmp_path):
    import os
    import signal

    caught = []
    previous = signal.signal(signal.SIGTERM, lambda *args: caught.append(args))  # if the app did not catch it
    try:
        backend = ScriptedEngine(["Half", " and", " the rest"], hold_after=1)
        app = scripted_app(backend)
        async with app.run_test() as pilot:
            await ready(pilot)
            await type_line(pilot, "question")
            await wait_for(pilot, lambda: app.queue.running is not None and app.queue.running.streamed == ["Half"])
            os.kill(os.getpid(), signal.SIGTERM)
            await wait_for(pilot, lambda: app.return_code is not None, timeout=5)
        assert caught == [] and app.return_code == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the handler before the app's is back
    finally:
        signal.signal(signal.SIGTERM, previous)
    [entry] = _journaled(tmp_path)
    assert [(m["text"], m["stopped"]) for m in entry["messages"]] == [("question", False), ("Half", True)]


@run_async
async def test_a_streaming_answer_is_journaled_as_it_grows(tmp_path, monkeypatch):
    from dsvl_tui.tui import answering

    monkeypatch.setattr(answering, "PARTIAL_SAVE_SECONDS", 0.0)
    backend = ScriptedEngine(["Half", " and", " the rest"], hold_after=2)
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "question")

        def journaled_so_far() -> bool:
            entries = _journaled(tmp_path)
            return bool(entries) and entries[0]["messages"][-1]["text"] == "Half and"

        await wait_for(pilot, journaled_so_far)  # while the answer is held half way: what kill -9 would keep
        assert _journaled(tmp_path)[0]["messages"][-1]["stopped"]
        backend.gate.set()
        await answered(pilot)
        await wait_for(pilot, lambda: not _journaled(tmp_path)[0]["messages"][-1]["stopped"])
    assert _journaled(tmp_path)[0]["messages"][-1]["text"] == "Half and the rest"


@run_async
async def test_a_bug_in_a_handler_ends_the_app_with_code_1_one_line_and_the_crash_log(tmp_path):
    """Not Textual's page of traceback with locals over the terminal: the log gets it, the user one line."""
    app = scripted_app()
    with pytest.raises(ZeroDivisionError):  # run_test re-raises a handler's exception into the test
        async with app.run_test() as pilot:
            await ready(pilot)
            app.call_later(lambda: 1 / 0)
            await wait_for(pilot, lambda: app.return_code is not None)
    assert app.return_code == 1
    log = (tmp_path / "data" / "crash.log").read_text()
    assert "ZeroDivisionError" in log and "Traceback" in log
    assert not app._exit_renderables  # no rich traceback page printed over the terminal at exit
