"""The app's modal screens: F1 help and the /resume list (preview, Escape, off the event loop, one-line
entries); the stylesheet's rules all match a widget; the dialogs share one frame."""

from __future__ import annotations

import threading

import pytest
from tui_support import (
    answered,
    notices,
    picture,
    ready,
    run_async,
    screen_text,
    scripted_app,
    type_line,
    wait_for,
)

from dsvl_tui.commands.registry import registry
from dsvl_tui.core.conversation import Conversation
from dsvl_tui.tui.screens import HelpScreen, MainScreen, ResumeScreen, key_names

pytestmark = pytest.mark.usefixtures("in_tmp")  # tests/tui/conftest.py: the current folder is the test's own


# --- modal screens: help and /resume ---------------------------------------------------------


@pytest.mark.slow
@run_async
async def test_f1_help_lists_every_binding_and_command_and_the_main_keys_wait_under_it():
    from dsvl_tui.tui.widgets import PromptInput

    app = scripted_app()
    async with app.run_test(size=(100, 60)) as pilot:  # tall enough to show the commands below the keys
        await ready(pilot)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = app.screen.text
        assert "``" not in text  # docstrings' markup stays out of the help
        for binding in MainScreen.BINDINGS:
            assert key_names(binding.key) in text and (binding.tooltip or binding.description.lower()) in text
        for key in ("Ctrl+P", "Enter", "Ctrl+J", "Up / Down", "Tab or Right"):  # the palette, the input box
            assert key in text
        assert "Up / Down" in PromptInput.__doc__
        for command in registry.commands("tui"):
            assert f"{command.usage}  " in text and command.summary in text
        assert "/regenerate" in screen_text(app)
        await pilot.press("ctrl+n")  # the main screen's keys wait while a modal is on top
        await pilot.pause()
        assert len(app.tabs.panes) == 1
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.main)
        assert app.queue.running is None and len(app.tabs.panes) == 1
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("f1")  # F1 closes it too
        await wait_for(pilot, lambda: app.screen is app.main)


def _journal_two() -> list[Conversation]:
    import time as clock

    from dsvl_tui.storage.journal import Journal

    made = []
    for number, (first, last) in enumerate([("older question", "older answer"), ("newer question", "newer answer")]):
        conversation = Conversation(title=first)
        conversation.add_user(first)
        conversation.add_answer(f"middle {number}")
        conversation.add_user("and then?")
        conversation.add_answer(last)
        assert Journal().record(conversation) is None
        made.append(conversation)
        clock.sleep(0.02)  # distinct modification times: newest first
    return made


@pytest.mark.slow
@run_async
async def test_resume_opens_a_list_whose_preview_follows_and_enter_opens_a_tab():
    older, newer = _journal_two()
    app = scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await type_line(pilot, "hello")
        await answered(pilot)  # the active tab is not empty: the resumed one opens in a new tab
        await type_line(pilot, "/resume")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.previewed is not None)
        modal = app.screen
        titles = [c.title for c in modal.choices]
        assert titles.index("newer question") < titles.index("older question")  # newest first
        listed = screen_text(app)
        assert "newer question" in listed and "4 messages, " in listed and " (just now)" in listed
        index = titles.index("newer question")
        for _ in range(index):
            await pilot.press("down")
        await wait_for(pilot, lambda: "newer answer" in modal.preview)
        assert "newer question" in modal.preview and "2 messages between" in modal.preview
        await pilot.press("down")  # the preview follows the highlight
        await wait_for(pilot, lambda: "older answer" in modal.preview)
        assert modal.previewed is not None and modal.previewed.title == "older question"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is app.main and len(app.tabs.panes) == 2)
        await wait_for(pilot, lambda: app.active.conversation.id == older.id)
        assert [m.text for m in app.active.conversation.messages][-1] == "older answer"
        assert any("resumed older question" in n for n in notices(app))


@pytest.mark.slow
@run_async
async def test_resume_list_closes_with_escape_and_resume_n_still_opens():
    older, newer = _journal_two()
    app = scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/resume")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.main)
        assert len(app.tabs.panes) == 1 and app.active.conversation.is_empty
        await type_line(pilot, "/resume 1")
        await wait_for(pilot, lambda: app.active.conversation.id == newer.id)


@pytest.mark.slow
@run_async
async def test_resume_reads_the_journal_off_the_event_loop(monkeypatch):
    """Up to 20 journal files are read in a worker thread, not on the loop (Pilot runs it in the main thread)."""
    from dsvl_tui.storage.journal import Journal

    older, newer = _journal_two()
    readers: list[threading.Thread] = []
    recent = Journal.recent

    def recording(self, limit=20):
        readers.append(threading.current_thread())
        return recent(self, limit)

    monkeypatch.setattr(Journal, "recent", recording)
    app = scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/resume")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.main)
        await type_line(pilot, "/resume 2")
        await wait_for(pilot, lambda: app.active.conversation.id == older.id)
    assert len(readers) == 2 and threading.main_thread() not in readers


@pytest.mark.slow
@run_async
async def test_resume_entries_are_one_line_cut_at_a_word_and_tab_titles_end_at_a_word(tmp_path):
    """A long /resume entry is one line (so eight fit at 80×24, issue 26): its title cut at a word, its
    detail after it, the line ending in an ellipsis instead of wrapping; a long tab title ends at a word
    with an ellipsis (they were cut mid-word; issue 16)."""
    from dsvl_tui.core.conversation import Attachment
    from dsvl_tui.storage.journal import Journal

    conversation = Conversation()
    conversation.pending.append(Attachment.from_path(picture(tmp_path / "holiday.png")))
    conversation.add_user("Please describe everything you can see in this picture of our summer holiday")
    conversation.add_answer("mountains")
    assert Journal().record(conversation) is None
    app = scripted_app()
    async with app.run_test(size=(60, 24)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/resume")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.previewed is not None)
        rows = screen_text(app).splitlines()
        first = next(i for i, row in enumerate(rows) if "1. Please describe" in row)
        assert "1. Please describe everything you can see\u2026 " in rows[first]
        assert rows[first].rstrip("│▊▎ ").endswith("\u2026")  # the rest of the detail is cut, not wrapped
        assert "messages" not in rows[first + 1] and "holiday" not in rows[first + 1]
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.active.conversation.id == conversation.id)
        assert app.tabs.title_of(app.active) == "1 Please describe\u2026"

    wide = scripted_app()
    async with wide.run_test(size=(140, 30)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/resume")
        await wait_for(pilot, lambda: isinstance(wide.screen, ResumeScreen) and wide.screen.previewed is not None)
        row = next(row for row in screen_text(wide).splitlines() if "1. Please describe" in row)
        assert "2 messages, " in row and "image holiday" in row  # with room, the detail with the first picture


@pytest.mark.slow
@run_async
async def test_every_rule_of_the_app_stylesheet_matches_a_widget():
    from textual.css.stylesheet import Stylesheet

    from dsvl_tui.tui.app import STYLESHEET

    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        sheet = Stylesheet(variables=app.get_css_variables())
        sheet.add_source(STYLESHEET.read_text(), read_from=(str(STYLESHEET), ""))
        sheet.parse()
        assert len(sheet.rules) >= 3
        for rule in sheet.rules:
            for selector_set in rule.selector_set:
                css = selector_set.css
                assert app.main.query(css) or css in app.main._css_type_names, f"{css} matches nothing"




@pytest.mark.slow
@run_async
async def test_the_modal_screens_share_the_dialog_frame():
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        panel = app.screen.query_one("Vertical")
        assert panel.styles.border.top[0] == "round" and panel.styles.max_width is not None
        assert app.screen.styles.align_horizontal == "center"
