"""Help and /resume at small terminal sizes (issue 26, item 9).

At 80×24 and 60×20 the help's descriptions wrapped under the key column, and
``/resume`` showed two entries at 80×24 (the preview took the height).
"""

from __future__ import annotations

import re

import pytest
from tui_support import ready, run_async, screen_text, scripted_app, type_line, wait_for

from dsvl_tui.core.conversation import Conversation
from dsvl_tui.tui.screens import HelpScreen, ResumeScreen


def _panel_lines(app) -> list[str]:
    """The lines inside the modal panel's border, without it."""
    from textual.containers import Vertical

    region = app.screen.query_one(Vertical).content_region
    return [line[region.x:region.right] for line in screen_text(app).splitlines()[region.y:region.bottom]]


@pytest.mark.slow
@pytest.mark.parametrize("size", [(80, 24), (60, 20)], ids=["80x24", "60x20"])
@run_async
async def test_help_descriptions_wrap_in_their_own_column(size):
    app = scripted_app()
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.pause()
        keys = [key for section in app.screen.sections for key, _ in section.rows]
        descriptions = {does for section in app.screen.sections for _, does in section.rows}
        lines = _panel_lines(app)
        # where the descriptions start: the column of the first row's description on screen
        first_key, first_does = app.screen.sections[0].rows[0]
        row = next(line for line in lines if first_key in line)
        column = row.index(first_does.split()[0], row.index(first_key) + len(first_key))
        wrapped = 0
        for line in lines[lines.index(row):]:
            head, rest = line[:column], line[column:]
            if head.strip() and not rest.strip():
                continue  # a section title
            # on the left only (a piece of) a key, never a description's words
            assert not head.strip() or any(head.strip() in key for key in keys), (line, column)
            wrapped += bool(rest.strip()) and not head.strip()
        assert wrapped, "at this size some description wraps: this test would not show the fault"
        assert len(descriptions) > 5


@pytest.mark.slow
@run_async
async def test_resume_shows_at_least_eight_entries_at_80x24():
    from dsvl_tui.storage.journal import Journal

    for number in range(12):
        conversation = Conversation(title=f"conversation number {number}")
        conversation.add_user(f"question {number}")
        conversation.add_answer(f"answer {number}")
        assert Journal().record(conversation) is None
    app = scripted_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/resume")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.previewed is not None)
        shown = [line for line in _panel_lines(app) if re.search(r"\d+\. conversation number", line)]
        assert len(shown) >= 8, "\n".join(_panel_lines(app))
        assert all("1 message" in line or "2 messages" in line for line in shown)  # the detail is on the line
