"""The app's keys: tabs, attach, regenerate, help, quit; the prompt's Enter, newline, history and completion;
the prompt history shared with the REPL; Escape on a waiting answer; the command palette."""

from __future__ import annotations

import pytest
from tui_support import (
    ScriptedEngine,
    answered,
    answers,
    first_choice,
    picture,
    ready,
    real_app,
    run_async,
    screen_text,
    scripted_app,
    type_line,
    wait_for,
)

from dsvl_tui.commands.registry import registry
from dsvl_tui.core.text import printable
from dsvl_tui.storage.paths import history_file
from dsvl_tui.storage.prompt_history import PromptHistory
from dsvl_tui.tui.screens import HelpScreen

pytestmark = pytest.mark.usefixtures("in_tmp")  # tests/tui/conftest.py: the current folder is the test's own


# --- keys ------------------------------------------------------------------------------


@pytest.mark.slow
@run_async
async def test_tab_keys_new_close_next_previous():
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        first = app.active
        await pilot.press("ctrl+n")
        await pilot.press("ctrl+n")
        await pilot.pause()
        panes = app.tabs.panes
        assert len(panes) == 3 and app.active is panes[2]
        await pilot.press("alt+right")
        assert app.active is panes[0]
        await pilot.press("ctrl+pageup")
        assert app.active is panes[2]
        await pilot.press("alt+left")
        assert app.active is panes[1]
        await pilot.press("ctrl+pagedown")
        assert app.active is panes[2]
        await pilot.pause()
        assert app.query_one("TabbedContent").active == f"tab-{panes[2].id}"
        await pilot.press("ctrl+w")
        await pilot.pause()
        assert len(app.tabs.panes) == 2 and app.active is panes[1] and first in app.tabs.panes
        assert app.focused is app.prompt


@pytest.mark.slow
@run_async
async def test_keys_attach_regenerate_help_quit(tiny):
    app = real_app(tiny)
    async with app.run_test() as pilot:
        await ready(pilot)
        await pilot.press("ctrl+o")
        assert app.prompt.text == "/image " and app.focused is app.prompt
        app.prompt.clear()
        await type_line(pilot, "hello")
        await answered(pilot)
        first = answers(app.active)[0]
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: answers(app.active) and answers(app.active)[0] is not first
                       and app.queue.for_pane(app.active) is None)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert "/regenerate" in app.screen.text
        await pilot.press("ctrl+q")  # quits from a modal screen too
        await pilot.pause()
    assert app.return_code == 0


@pytest.mark.slow
@run_async
async def test_input_keys_enter_newline_history_and_completion(tmp_path):
    photo = picture(tmp_path / "scene.png")
    backend = ScriptedEngine(["ok"])
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        app.prompt.focus()
        await pilot.press("a", "ctrl+j", "b", "enter")
        await answered(pilot)
        assert app.active.conversation.messages[0].text == "a\nb"
        await pilot.press("up")
        assert app.prompt.text == "a\nb"
        await pilot.press("down")
        assert app.prompt.text == ""
        await pilot.press("/", "r", "e", "g", "tab")
        assert app.prompt.text == "/regenerate "
        app.prompt.clear()
        await pilot.press(*"/image sc")
        assert app.prompt.suggestion == "ene.png"
        await pilot.press("tab")
        assert app.prompt.text == "/image scene.png "
        await pilot.press("enter")
        await pilot.pause()
        assert [a.name for a in app.active.conversation.pending] == [photo.name]


@pytest.mark.slow
@run_async
async def test_prompts_are_recalled_in_the_next_run_and_shared_with_the_repl():
    from prompt_toolkit.history import FileHistory

    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "first question")
        await answered(pilot)
        await type_line(pilot, "line one\nline two")
        await answered(pilot, 2)
    # The REPL reads the same file, newest first.
    assert list(FileHistory(str(history_file())).load_history_strings())[:2] == ["line one\nline two",
                                                                                   "first question"]
    FileHistory(str(history_file())).store_string("typed in the REPL")  # what the REPL's prompt does

    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: len(app.prompt.prompts) == 3)
        app.prompt.focus()
        await pilot.press("up")
        assert app.prompt.text == "typed in the REPL"
        await pilot.press("up")
        assert app.prompt.text == "line one\nline two"
        await pilot.press("up", "up")  # the cursor is on the last line: the first Up moves it
        assert app.prompt.text == "first question"


@pytest.mark.slow
@run_async
async def test_a_corrupt_or_unreadable_history_file_does_not_stop_the_app():
    import random

    from prompt_toolkit.history import FileHistory

    path = history_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(random.Random(7).randbytes(8192) + b"\n+\xff\xfe\x00\x1b[2J\n")
    FileHistory(str(path)).store_string("still here")
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: app.prompt.prompts)
        assert app.prompt.prompts[-1] == "still here"
        assert all(printable(text) == text and "\ufffd" not in text for text in app.prompt.prompts)
        await type_line(pilot, "hello")
        await answered(pilot)

    path.unlink()
    path.mkdir()  # cannot be read or appended to
    app = scripted_app()
    warnings: list[str] = []
    app.notify = lambda message, **_: warnings.append(str(message))
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "hello")
        await answered(pilot)
        await pilot.press("up")
        assert app.prompt.text == "hello"  # this run's prompts are still recalled
        await wait_for(pilot, lambda: any("history is not saved" in w for w in warnings))


def test_prompt_history_keeps_the_most_recent_prompts(tmp_path):
    history = PromptHistory(tmp_path / "history", limit=3)
    assert history.load() == []  # no file yet
    for text in ["a", "b", "b", "c", "d"]:
        history.store(text)
    assert history.load() == ["b", "c", "d"]


@pytest.mark.slow
@run_async
async def test_escape_withdraws_a_waiting_answer():
    backend = ScriptedEngine(["a", "b"], hold_after=1)
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        first = app.active
        await type_line(pilot, "one")
        await pilot.press("ctrl+n")
        await type_line(pilot, "two")
        second = app.active
        await pilot.press("escape")  # the waiting one leaves the line without running
        await answered(pilot, pane=second)
        assert answers(second)[0].stopped and answers(second)[0].text == ""
        await pilot.press("alt+left")
        await pilot.press("escape")
        await answered(pilot, pane=first)
        assert answers(first)[0].stopped and answers(first)[0].text == "a"
        assert len(backend.calls) == 1


@pytest.mark.slow
@run_async
async def test_palette_lists_every_command_and_runs_one():
    from textual.command import CommandPalette

    app = scripted_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        palette = app.screen
        await wait_for(pilot, lambda: palette.query_one("CommandList").option_count >= len(registry.commands("tui")))
        listed = screen_text(app)
        for command in registry.commands("tui")[:8]:  # the first screenful, in order
            assert command.usage in listed
        await pilot.press(*"new")
        await wait_for(pilot, lambda: first_choice(palette).startswith("/new"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.tabs.panes) == 2)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        palette = app.screen
        await pilot.press(*"image")
        await wait_for(pilot, lambda: first_choice(palette).startswith("/image"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.prompt.text == "/image ")
