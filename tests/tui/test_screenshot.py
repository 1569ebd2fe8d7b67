"""Ctrl+P → Screenshot saves into the data folder and says where (issue 26, item 8).

Textual's default is ``~/Downloads``, which a server account often lacks: the
user saw only "Failed to save screenshot".
"""

from __future__ import annotations

import pytest
from tui_support import first_choice, ready, run_async, scripted_app, wait_for


@pytest.mark.slow
@run_async
async def test_the_palette_screenshot_lands_in_the_data_folder_without_a_downloads_folder(tmp_path, monkeypatch):
    from textual.command import CommandPalette

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/Downloads
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(tmp_path / "home" / "Downloads"))
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        palette = app.screen
        await pilot.press(*"screenshot")
        await wait_for(pilot, lambda: first_choice(palette).startswith("Screenshot"))
        await pilot.press("enter")
        folder = tmp_path / "data" / "screenshots"
        await wait_for(pilot, lambda: folder.is_dir() and any(folder.iterdir()), timeout=30)
        [saved] = list(folder.iterdir())
        assert saved.suffix == ".svg" and saved.read_text().startswith("<svg")
        toasts = [str(n.message) for n in app._notifications]
        assert f"saved to {saved}" in toasts
        assert not any("Failed" in toast for toast in toasts)
