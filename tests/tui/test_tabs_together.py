"""Tabs of the app answering at the same time on a backend that decodes several answers together.

The app runs as many answers at once as its backend decodes together (the
engine's ``max_batch``; ``tui.workers.answer_places``), the others wait
visibly; stopping, withdrawing and the save of partial answers on exit work
for every running one. The streaming is the real engine's (a tiny
checkpoint, loaded with ``max_batch`` 2); the stand-in is used only to hold
answers half way.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tui_support import ScriptedEngine, ready, run_async, scripted_app, type_line, wait_for

from dsvl_tui.core.options import Options
from dsvl_tui.tui.app import DsvlApp
from dsvl_tui.tui.widgets import ChatPane
from engine.testing.random_checkpoints import write_checkpoint
from engine.types import GenerationSettings

pytestmark = pytest.mark.slow  # pyproject.toml: the whole app on a 24-layer checkpoint for seconds

# Far more tokens than either answer reaches while the test looks: both are still running when both have text.
ENDLESS = GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=3000, ignore_eos=True)


@pytest.fixture(scope="module")
def deep(tmp_path_factory) -> Path:
    """A tiny checkpoint with 24 layers: the 2-layer one writes 3,000 tokens in a second or two, before a
    second tab has asked; this one takes ten times as long, so the first answer is still running."""
    return write_checkpoint(tmp_path_factory.mktemp("tabs") / "deep-vl-chat", lm_layers=24)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):  # data and config folders: conftest's private_dirs
    monkeypatch.chdir(tmp_path)


def answers(pane: ChatPane) -> list:
    return [m for m in pane.conversation.messages if m.role == "assistant"]


def streaming(pane: ChatPane) -> bool:
    return pane.pending_answer is not None and bool(pane.pending_answer.text)


def journaled(tmp_path: Path) -> dict[str, list[dict]]:
    """The journal's conversations, by their first message."""
    entries = [json.loads(p.read_text()) for p in sorted((tmp_path / "data" / "journal").glob("*.json"))]
    return {entry["messages"][0]["text"]: entry["messages"] for entry in entries if entry["messages"]}


@run_async
async def test_two_tabs_stream_at_the_same_time_and_both_answers_are_kept_on_quit(deep, tmp_path):
    app = DsvlApp(Options(model=str(deep), settings=ENDLESS, max_batch=2))
    async with app.run_test() as pilot:
        await ready(pilot)
        assert app.queue.places == 2  # the engine's max_batch
        first = app.active
        await type_line(pilot, "first")
        await wait_for(pilot, lambda: streaming(first), timeout=60)
        await pilot.press("ctrl+n")
        await pilot.pause()
        second = app.active
        await type_line(pilot, "second")
        await wait_for(pilot, lambda: streaming(second), timeout=60)
        # One after the other, they would take turns: the second would have no text before the first ended.
        assert streaming(first) and answers(first) == [] and answers(second) == []
        assert len(app.queue.started) == 2 and not app.queue.waiting
        await wait_for(pilot, lambda: app.status.state == "generating" and app.status.detail == "2 answers")
        grown = len(first.pending_answer.text)
        await wait_for(pilot, lambda: len(first.pending_answer.text) > grown, timeout=60)  # the first goes on too
        await pilot.press("ctrl+q")
    kept = journaled(tmp_path)
    for question in ("first", "second"):
        asked, answer = kept[question]
        assert asked["text"] == question and answer["stopped"] and answer["text"]


@run_async
async def test_escape_stops_one_of_two_running_answers_and_the_other_goes_on(deep):
    app = DsvlApp(Options(model=str(deep), settings=ENDLESS, max_batch=2))
    async with app.run_test() as pilot:
        await ready(pilot)
        first = app.active
        await type_line(pilot, "first")
        await pilot.press("ctrl+n")
        await pilot.pause()
        second = app.active
        await type_line(pilot, "second")
        await wait_for(pilot, lambda: streaming(first) and streaming(second), timeout=60)
        await pilot.press("escape")  # the active tab's: the second
        await wait_for(pilot, lambda: len(answers(second)) == 1, timeout=60)
        [stopped] = answers(second)
        assert stopped.stopped and stopped.text and stopped.stats.stop_reason == "cancelled"
        assert answers(first) == [] and app.queue.for_pane(first) is not None  # still answering
        grown = len(first.pending_answer.text)
        await wait_for(pilot, lambda: len(first.pending_answer.text) > grown, timeout=60)
        assert app.status.state == "generating" and app.status.detail == ""  # one runs now
        app.tabs.step(-1)
        await pilot.pause()
        assert app.active is first
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(answers(first)) == 1, timeout=60)
        assert answers(first)[0].stopped and app.queue.for_pane(first) is None
        assert app.status.state == "ready"


class Batching(ScriptedEngine):
    """The stand-in, decoding two answers together as the engine does with ``max_batch`` 2."""

    max_batch = 2


@run_async
async def test_past_the_backends_places_answers_wait_visibly_and_can_be_withdrawn():
    backend = Batching(["one", " two"], hold_after=1)
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        panes = []
        for question in ("a", "b", "c"):
            if panes:
                await pilot.press("ctrl+n")
                await pilot.pause()
            panes.append(app.active)
            await type_line(pilot, question)
        first, second, third = panes
        await wait_for(pilot, lambda: streaming(first) and streaming(second))
        assert third.pending_answer is not None and third.pending_answer.state == "waiting"
        assert "waiting for its turn" in str(third.pending_answer.query_one(".marker").render())
        assert app.status.waiting == 1 and app.status.detail == "2 answers"
        await pilot.press("escape")  # the third, waiting: withdrawn, kept as an empty stopped answer
        await wait_for(pilot, lambda: len(answers(third)) == 1)
        assert answers(third)[0].stopped and answers(third)[0].text == ""
        backend.gate.set()
        await wait_for(pilot, lambda: len(answers(first)) == len(answers(second)) == 1)
        assert [answers(p)[0].text for p in (first, second)] == ["one two", "one two"]
        assert backend.max_concurrent == 2 and len(backend.calls) == 2
