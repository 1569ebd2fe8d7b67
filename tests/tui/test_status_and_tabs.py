"""The status bar and the tabs (issue 26, item 10): each tab its own speed, the device kept beside
``+N images`` at 80 columns, tab titles as wide as the terminal allows."""

from __future__ import annotations

import pytest
from tui_support import Host, ready, run_async, scripted_app, type_line, wait_for

from dsvl_tui.core.conversation import Conversation
from dsvl_tui.core.text import shorten
from dsvl_tui.tui.widgets import StatusBar
from dsvl_tui.tui.widgets._conversation_tabs import TAB_TITLE_CHARS, TAB_TITLE_MAX


@run_async
async def test_at_80_columns_the_device_stays_beside_the_pending_images():
    bar = StatusBar()
    async with Host(bar).run_test(size=(80, 3)) as pilot:
        bar.model, bar.device, bar.state = "deepseek-ai/deepseek-vl-1.3b-chat", "cpu fp32", "ready"
        bar.tokens_per_second, bar.time_to_first_token = 12.3, 0.5
        bar.context_used, bar.context_window = 1234, 4096
        await pilot.pause()
        alone = str(bar.render())
        assert "cpu fp32" in alone and "12.3 tok/s" in alone  # without images: the speed too, the ttft given up
        bar.pending_images = 2
        await pilot.pause()
        text = str(bar.render())
        assert "cpu fp32" in text and "+2 images" in text and "deepseek-vl-1.3b-chat" in text
        assert "ctx 1234/4096" in text  # the meter's numbers stay when its bar goes
        assert len(text) <= 78


@pytest.mark.slow
@run_async
async def test_a_new_tab_does_not_show_another_tabs_speed():
    app = scripted_app()
    async with app.run_test(size=(120, 24)) as pilot:
        await ready(pilot)
        await type_line(pilot, "hello")
        await wait_for(pilot, lambda: app.status.tokens_per_second == 42.0)
        first = app.active
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.active is not first and app.status.tokens_per_second is None)
        assert app.status.time_to_first_token is None and "tok/s" not in str(app.status.render())
        await pilot.press("alt+left")
        await wait_for(pilot, lambda: app.active is first and app.status.tokens_per_second == 42.0)


TITLE = "Please describe everything you can see in this picture of our summer holiday by the sea"


async def shown_title(width: int) -> tuple[str, str, str]:
    """The title ``title_of`` gives at ``width`` columns, the tab's label, and the label once at 80 columns."""
    app = scripted_app()
    async with app.run_test(size=(width, 24)) as pilot:
        await ready(pilot)
        app.open_conversation(Conversation(title=TITLE))
        await wait_for(pilot, lambda: app.active.conversation.title == TITLE)
        await pilot.pause()
        tab = app.tabs._tabbed.get_tab(f"tab-{app.active.id}")
        title, label = app.tabs.title_of(app.active), str(tab.label)
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: len(str(tab.label)) < 25)
        return title, label, str(tab.label)


@pytest.mark.slow
@run_async
async def test_tab_titles_grow_with_the_terminal():
    title, _, _ = await shown_title(60)
    assert title == f"1 {shorten(TITLE, TAB_TITLE_CHARS)}"
    title, label, narrower = await shown_title(200)
    assert title == label == f"1 {shorten(TITLE, TAB_TITLE_MAX)}"  # not cut at ten characters at 200 columns
    assert len(label) > 50 and narrower == f"1 {shorten(TITLE, 20)}"  # and shorter again at 80
