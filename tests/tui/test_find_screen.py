"""/find in the full-screen app (issue 25): a list of what was found, and Enter opens the conversation scrolled to
the message that matched."""

from __future__ import annotations

import threading

import pytest
from tui_support import ready, run_async, screen_text, scripted_app, type_line, wait_for

from dsvl_tui.core.conversation import Attachment, Conversation
from dsvl_tui.storage.journal import Journal
from dsvl_tui.storage.search_index import SearchIndex
from dsvl_tui.tui.screens import FindScreen


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):  # data and config folders: conftest's private_dirs
    monkeypatch.chdir(tmp_path)


def _long_conversation() -> Conversation:
    """Forty messages; the word sought is in the fifth, far above the end."""
    conv = Conversation(title="the long one")
    for number in range(40):
        text = f"message {number}: " + "filler words to fill the screen " * 6
        if number == 4:
            text = "where did the \x1b[2Jnarwhal go? " + text
        message = conv.add_user(text) if number % 2 == 0 else conv.add_answer(text)
        if number == 4:
            message.images.append(Attachment(name="arctic.png"))
    assert Journal().record(conv) is None
    return conv


@pytest.mark.slow
@run_async
async def test_find_lists_the_matches_and_enter_opens_the_conversation_at_the_message(monkeypatch):
    target = _long_conversation()
    other = Conversation(title="unrelated")
    other.add_user("no sea creatures here")
    assert Journal().record(other) is None
    searchers: list[threading.Thread] = []
    search = SearchIndex.search

    def recording(self, *args, **kwargs):
        searchers.append(threading.current_thread())
        return search(self, *args, **kwargs)

    monkeypatch.setattr(SearchIndex, "search", recording)
    app = scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/find narwhal")
        await wait_for(pilot, lambda: isinstance(app.screen, FindScreen))
        shown = screen_text(app)
        assert "Found narwhal in 1 conversation" in shown and " 1. the long one  " in shown
        assert ", 1 picture" in shown and "where did the narwhal go?" in shown  # the escape is gone
        assert [c.hit.message for c in app.screen.choices] == [4]
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is app.main and app.active.conversation.id == target.id)
        pane = app.active
        message = pane.conversation.messages[4]

        def at_message() -> bool:
            widget = next((w for w in pane.children if getattr(w, "message", None) is message), None)
            if widget is None or not widget.region.height:
                return False
            top = widget.virtual_region.y
            return pane.scroll_y <= top < pane.scroll_y + pane.size.height and pane.scroll_y < pane.max_scroll_y

        await wait_for(pilot, at_message)
        assert "narwhal" in screen_text(app)
    assert searchers and threading.main_thread() not in searchers  # searched off the event loop


@pytest.mark.slow
@run_async
async def test_find_list_closes_with_escape_and_says_when_nothing_is_found():
    """At 80×24 a long title is cut so that the date and the picture count still show."""
    _long_conversation()
    long = Conversation(title="a very long title about the narwhal and every other whale of the arctic seas")
    long.add_user("narwhal tusks").images.extend([Attachment(name="tusk.png"), Attachment(name="pod.png")])
    assert Journal().record(long) is None
    app = scripted_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/find narwhal")
        await wait_for(pilot, lambda: isinstance(app.screen, FindScreen))
        shown = screen_text(app)
        assert "a very long title about the\u2026  " in shown and ", 2 pictures" in shown and ", 1 picture" in shown
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.main)
        assert app.active.conversation.is_empty
        await type_line(pilot, "/find walrus")
        await wait_for(pilot, lambda: "nothing found for walrus" in screen_text(app))
