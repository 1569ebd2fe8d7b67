"""Keys in a browser (``dsvl-chat web``, issue 26, item 7): the footer offers, help lists and the app binds keys
that a browser lets through; Ctrl+N, Ctrl+W and Ctrl+Q, which it keeps for itself, are not offered there."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_support import ready, run_async, scripted_app, wait_for

from dsvl_tui.tui.screens import HelpScreen


@pytest.fixture
def web_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment ``dsvl-chat web`` gives each tab's app."""
    folder = tmp_path / "web-uploads"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("DSVL_WEB", "1")
    monkeypatch.setenv("DSVL_WEB_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("DSVL_WEB_UPLOADS", str(folder))


def offered(app) -> set[str]:
    """The keys the footer shows."""
    return {active.binding.key for active in app.screen.active_bindings.values() if active.binding.show}


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
