"""Keys in a browser (``dsvl-chat web``, issue 26, item 7): the footer offers, help lists and the app binds keys
that a browser lets through; Ctrl+N, Ctrl+W and Ctrl+Q, which it keeps for itself, are not offered there."""

from __future__ import annotations

import pytest
from tui_support import ready, run_async, scripted_app, wait_for

from dsvl_tui.tui.screens import HelpScreen


def offered(app) -> set[str]:
    """The keys the footer shows."""
    return {active.binding.key for active in app.screen.active_bindings.values() if active.binding.show}


@pytest.mark.slow
@run_async
async def test_in_a_browser_the_footer_offers_alt_keys_and_they_work(web_mode):
    app = scripted_app()
    async with app.run_test(size=(120, 24)) as pilot:
        await ready(pilot)
        assert app.in_browser
        keys = offered(app)
        assert {"alt+n", "alt+w", "alt+q"} <= keys
        assert not keys & {"ctrl+n", "ctrl+w", "ctrl+q"}
        await pilot.press("alt+n")
        await wait_for(pilot, lambda: len(app.tabs.panes) == 2)
        await pilot.press("alt+w")
        await wait_for(pilot, lambda: len(app.tabs.panes) == 1)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        keys_listed = [key.lower() for key, _ in app.screen.sections[0].rows]
        assert any("alt+n" in key for key in keys_listed) and not any("ctrl+n" in key for key in keys_listed)
        await pilot.press("escape")
        await pilot.press("alt+q")
        await wait_for(pilot, lambda: not app.is_running)


@run_async
async def test_in_a_terminal_the_footer_offers_the_ctrl_keys():
    app = scripted_app()
    async with app.run_test(size=(120, 24)) as pilot:
        await ready(pilot)
        assert not app.in_browser
        keys = offered(app)
        assert {"ctrl+n", "ctrl+w", "ctrl+q"} <= keys and "alt+n" not in keys


@run_async
async def test_alt_n_as_a_browser_sends_it_opens_a_tab_even_from_the_input(web_mode):
    """xterm.js sends Alt+N as ESC n, which Textual reads as a printable "alt+n" with the character "n": the
    input box took it as a letter before the (non-priority) binding was looked at (seen in the browser test)."""
    from textual._xterm_parser import XTermParser

    app = scripted_app()
    async with app.run_test(size=(120, 24)) as pilot:
        await ready(pilot)
        app.prompt.focus()
        app.prompt.load_text_at_end("draft")
        parser = XTermParser()
        [key] = [*parser.feed("\x1bn"), *parser.feed("")]  # "" ends the input: ESC n is read as one key
        assert key.key == "alt+n" and key.character == "n"  # what the browser's bytes become
        app.post_message(key)
        await wait_for(pilot, lambda: len(app.tabs.panes) == 2)
        assert "draftn" not in app.prompt.text
