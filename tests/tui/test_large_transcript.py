"""A long transcript opens without freezing the app: only the newest messages are mounted, older ones in
batches as the user scrolls up (mounting all 10,000 messages of a 20 MB transcript froze the TUI ~a minute)."""

from __future__ import annotations

import pytest
from tui_support import ready, run_async, scripted_app, type_line, wait_for

from dsvl_tui.core.conversation import Conversation
from dsvl_tui.storage import transcript
from dsvl_tui.tui.widgets import AssistantMessage, UserMessage
from dsvl_tui.tui.widgets._chat_pane import BATCH_CHARS, BATCH_MESSAGES, EarlierMessages


def _saved(path, turns: int, text: str = "") -> Conversation:
    conv = Conversation(model="tiny")
    for i in range(turns):
        conv.add_user(f"question {i} {text}")
        conv.add_answer(f"answer {i} {text}")
    transcript.save_transcript(conv, path)
    return conv


def _mounted(app) -> list[str]:
    return [w.message.text for w in app.active.children if isinstance(w, (UserMessage, AssistantMessage))]


@pytest.mark.slow
@run_async
async def test_a_long_transcript_mounts_its_newest_messages_and_the_rest_as_the_user_scrolls_up(tmp_path):
    conv = _saved(tmp_path / "long.json", 200)
    every = [m.text for m in conv.messages]
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, f"/load {tmp_path / 'long.json'}")
        await wait_for(pilot, lambda: len(app.active.conversation.messages) == 400 and _mounted(app))
        assert _mounted(app) == every[-BATCH_MESSAGES:]  # the newest, in order
        [line] = app.active.query(EarlierMessages)
        assert f"{400 - BATCH_MESSAGES:,} earlier messages" in str(line.render())
        # Scrolled to the top: the next batch goes above, the view stays on what was read.
        app.active.scroll_home(animate=False)
        await wait_for(pilot, lambda: len(_mounted(app)) == 2 * BATCH_MESSAGES)
        assert _mounted(app) == every[-2 * BATCH_MESSAGES:] and app.active.scroll_y > 0
        # Home where it already is, and a click on the line, do the same.
        app.active.scroll_home(animate=False)
        await wait_for(pilot, lambda: len(_mounted(app)) == 3 * BATCH_MESSAGES)
        await pilot.pause()
        app.active.scroll_home(animate=False, immediate=True)
        await wait_for(pilot, lambda: app.active.scroll_y == 0)
        app.active.scroll_where("home")  # the Home key, at the top already
        await wait_for(pilot, lambda: len(_mounted(app)) == 4 * BATCH_MESSAGES)
        await app.active.query_one(EarlierMessages).on_click()
        assert len(_mounted(app)) == 5 * BATCH_MESSAGES
        while app.active.query(EarlierMessages):
            await app.active.show_earlier()
            await pilot.pause()  # a batch the scroll asked for may be on its way: let it finish
        assert _mounted(app) == every
        # A new question after all that lands at the end.
        await type_line(pilot, "one more?")
        await wait_for(pilot, lambda: _mounted(app)[-1:] != every[-1:] and not app.sending)
        assert _mounted(app)[:400] == every and "one more?" in _mounted(app)


@pytest.mark.slow
@run_async
async def test_a_batch_is_bounded_by_its_text_too(tmp_path):
    big = "word " * (BATCH_CHARS // 5)  # each message alone is about a whole batch's text
    conv = _saved(tmp_path / "big.json", 3, big)
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, f"/load {tmp_path / 'big.json'}")
        await wait_for(pilot, lambda: len(app.active.conversation.messages) == 6 and _mounted(app))
        assert _mounted(app) == [conv.messages[-1].text]  # at least one, the newest
        while app.active.query(EarlierMessages):
            await app.active.show_earlier()
            await pilot.pause()  # a batch the scroll asked for may be on its way: let it finish
        assert _mounted(app) == [m.text for m in conv.messages]


@pytest.mark.slow
@run_async
async def test_a_short_conversation_is_mounted_whole(tmp_path):
    conv = _saved(tmp_path / "short.json", 3)
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, f"/load {tmp_path / 'short.json'}")
        await wait_for(pilot, lambda: len(_mounted(app)) == 6)
        assert _mounted(app) == [m.text for m in conv.messages] and not app.active.query(EarlierMessages)


def test_a_conversations_repr_is_short_whatever_it_holds():
    """Textual names every worker by the repr of its arguments, on the event loop: the context meter's
    worker took most of a second per turn to repr a 20 MB conversation."""
    conv = Conversation(model="tiny")
    for i in range(5000):
        conv.add_user(f"question {i} " + "x" * 1000)
        conv.add_answer(f"answer {i}")
    assert len(repr(conv)) < 120 and "10000 messages" in repr(conv)
