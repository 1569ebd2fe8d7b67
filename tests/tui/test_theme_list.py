"""``/theme`` alone lists the themes, the current one marked; a switch is confirmed."""

from __future__ import annotations

import pytest
from tui_support import notices, ready, run_async, scripted_app, type_line, wait_for

from themes import theme_names


@pytest.mark.slow
@run_async
async def test_theme_alone_lists_the_themes_and_a_switch_is_confirmed():
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "/theme")
        await wait_for(pilot, lambda: any("themes" in text for text in notices(app, error=False)))
        listing = next(text for text in notices(app, error=False) if "themes" in text)
        rows = listing.splitlines()[1:]
        assert [row[2:] for row in rows] == theme_names()
        assert [row for row in rows if row.startswith("*")] == ["* dsvl-night"]
        assert not notices(app, error=True)  # not a usage error
        await type_line(pilot, "/theme dsvl-paper")
        await wait_for(pilot, lambda: any("theme: dsvl-paper" in text for text in notices(app, error=False)))
        assert app.theme == "dsvl-paper"


@pytest.mark.slow
@run_async
async def test_help_theme_names_the_themes():
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "/help theme")
        await wait_for(pilot, lambda: any(text.startswith("/theme [NAME]") for text in notices(app, error=False)))
        shown = next(text for text in notices(app, error=False) if text.startswith("/theme [NAME]"))
        assert shown.splitlines()[-1] == f"themes: {', '.join(theme_names())}"
