"""``/compare`` in the app (issue 25): two tiny real models answer each message side by side, each with its own
stats line, and the answer records both; a saved or resumed conversation shows them side by side again."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_support import GREEDY, ScriptedEngine, ready, run_async, screen_text, scripted_app, type_line, wait_for

from dsvl_tui.core.options import Options
from dsvl_tui.storage.transcript import load_transcript
from dsvl_tui.tui.app import DsvlApp
from dsvl_tui.tui.widgets import ComparedPair, SideAnswer
from engine.testing.random_checkpoints import write_checkpoint

pytestmark = pytest.mark.slow  # pyproject.toml: drives the whole app for seconds a test


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):  # data and config folders: conftest's private_dirs
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tui-compare")
    return write_checkpoint(folder / "tiny-a", seed=1), write_checkpoint(folder / "tiny-b", seed=2)


def _notices(app) -> str:
    return " ".join(str(notice.render()) for notice in app.active.query("Notice"))


@run_async
async def test_two_models_stream_side_by_side_and_both_are_recorded(two, tmp_path):
    first, second = two
    app = DsvlApp(Options(model=str(first), device="cpu", settings=GREEDY))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await type_line(pilot, f"/compare {second}")
        await wait_for(pilot, lambda: app.comparing.compared_side() is not None, timeout=120)
        await wait_for(pilot, lambda: "comparing with tiny-b" in _notices(app))
        notices = _notices(app)
        assert notices.index("tiny-b needs about") < notices.index("comparing with tiny-b")  # said before loading
        await type_line(pilot, "Describe the sky.")
        conversation = app.active.conversation
        await wait_for(pilot, lambda: len(conversation.messages) == 2 and conversation.messages[1].compared is not None,
                       timeout=120)
        answer = conversation.messages[1]
        assert answer.stats.new_tokens == answer.compared.stats.new_tokens == GREEDY.max_new_tokens
        assert answer.compared.model == str(second) and answer.text != answer.compared.text
        pair = app.active.query_one(ComparedPair)
        await wait_for(pilot, lambda: pair.other.state == "done" and pair.main.state == "done")
        # Side by side: the same row, the compared one to the right; each headed by its model, each its stats.
        assert pair.main.region.y == pair.other.region.y and pair.main.region.right <= pair.other.region.x
        for side, label in ((pair.main, "tiny-a"), (pair.other, "tiny-b")):
            assert str(side.query_one(".role").render()) == label
            marker = str(side.query_one(".marker").render())
            assert "tok/s" in marker and "first token" in marker, marker
        shown = screen_text(app)
        assert "tiny-a" in shown and "tiny-b" in shown
        # Kept: the journal has both, a saved transcript too, and opening it shows them side by side again.
        await type_line(pilot, f"/save {tmp_path / 'both.json'}")
        await wait_for(pilot, lambda: (tmp_path / "both.json").exists())
        saved = load_transcript(tmp_path / "both.json")
        assert saved.messages[1].compared is not None and saved.messages[1].compared.text == answer.compared.text
        app.open_conversation(saved)
        await wait_for(pilot, lambda: app.active.conversation is saved and bool(app.active.query(ComparedPair)))
        reopened = app.active.query_one(ComparedPair)
        assert str(reopened.other.query_one(".role").render()) == "tiny-b"
        await type_line(pilot, "/compare off")  # this tab compared with nothing yet
        await wait_for(pilot, lambda: "not comparing" in _notices(app))


@run_async
async def test_escape_stops_both_sides_on_the_one_engine():
    backend = ScriptedEngine(["Hi", " there", " again"], hold_after=1)
    app = scripted_app(backend)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/compare --temperature 0.9")
        await wait_for(pilot, lambda: app.comparing.compared_side() is not None)
        assert app.comparing.compared_side().shared
        await type_line(pilot, "hello")
        await wait_for(pilot, lambda: len(app.active.query(SideAnswer)) == 2
                       and all(side.text == "Hi" for side in app.active.query(SideAnswer)))
        assert backend.calls[0][-1].text == backend.calls[1][-1].text == "hello"  # one engine, both asked
        await pilot.press("escape")
        conversation = app.active.conversation
        await wait_for(pilot, lambda: len(conversation.messages) == 2 and conversation.messages[1].compared is not None)
        answer = conversation.messages[1]
        assert answer.stopped and answer.compared.stopped
        assert answer.text == answer.compared.text == "Hi"
        assert answer.compared.settings is not None and answer.compared.settings.temperature == 0.9


@run_async
async def test_escape_stops_a_compared_answer_that_outlasts_the_main_one(two):
    _, second = two
    held = ScriptedEngine(["Slow", " one"], hold_after=1)
    app = scripted_app(ScriptedEngine(["Quick."]))
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        app.loader = lambda model, **options: held  # the second model (its size is read from the tiny checkpoint)
        await type_line(pilot, f"/compare {second}")
        await wait_for(pilot, lambda: app.comparing.compared_side() is not None)
        await type_line(pilot, "hello")
        conversation = app.active.conversation
        pair = app.active.query_one(ComparedPair)
        await wait_for(pilot, lambda: len(conversation.messages) == 2 and pair.other.text == "Slow")
        assert conversation.messages[1].text == "Quick." and conversation.messages[1].compared is None
        await pilot.press("escape")
        await wait_for(pilot, lambda: conversation.messages[1].compared is not None)
        assert conversation.messages[1].compared.stopped and conversation.messages[1].compared.text == "Slow"
        assert pair.other.state == "stopped"


@run_async
async def test_a_message_sent_while_the_compared_answer_streams_stops_it_and_keeps_what_it_said(two):
    _, second = two
    held = ScriptedEngine(["Slow", " one"], hold_after=1)
    app = scripted_app(ScriptedEngine(["Quick."]))
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        app.loader = lambda model, **options: held
        await type_line(pilot, f"/compare {second}")
        await wait_for(pilot, lambda: app.comparing.compared_side() is not None)
        await type_line(pilot, "first")
        conversation = app.active.conversation
        first_pair = app.active.query_one(ComparedPair)
        await wait_for(pilot, lambda: len(conversation.messages) == 2 and first_pair.other.text == "Slow")
        held.chunks = ["Next."]  # one chunk: the next compared answer does not wait at the gate
        await type_line(pilot, "second")
        await wait_for(pilot, lambda: len(conversation.messages) == 4 and conversation.messages[3].compared is not None)
        first = conversation.messages[1].compared
        assert first is not None and first.stopped and first.text == "Slow"
        assert [m.text for m in held.calls[1]] == ["first", first.text, "second"]  # its own answer, as far as it got


@run_async
async def test_a_compared_answer_from_a_file_is_drawn_printable():
    from tui_support import Host

    from dsvl_tui.core.conversation import ChatMessage, ComparedAnswer

    hostile = ComparedAnswer("evil\x1b]52;c;aGk=\x07\x1b[31m", "other\x1b[2J")  # what a transcript may hold
    pair = ComparedPair.of(ChatMessage("assistant", "main", compared=hostile), "DeepSeek-VL")
    async with Host(pair).run_test(size=(100, 12)) as pilot:
        await pilot.pause()
        shown = screen_text(pilot.app)
        assert "\x1b]52" not in shown and "\x1b[2J" not in shown and "\x1b[31m" not in shown
        assert "other" in shown and "evil" in shown
