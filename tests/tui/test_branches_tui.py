"""Branches in the full-screen app, on the tiny checkpoint: /regenerate and /edit N keep what they replace, a
message with versions shows "k/n", Alt+Up/Down step through them, /branch lists and switches, autosave keeps
the tree."""

from __future__ import annotations

import pytest
from textual.widgets import Label
from tui_support import GREEDY, notices, ready, run_async, scripted_app, type_line, wait_for

from dsvl_tui.core import branches
from dsvl_tui.core.options import Options
from dsvl_tui.storage.journal import Journal
from dsvl_tui.tui.app import DsvlApp
from dsvl_tui.tui.widgets import AssistantMessage, UserMessage


def headers(app, kind) -> list[str]:
    """The header line of each message of ``kind`` shown in the active pane."""
    return [str(widget.query_one(".role", Label).render()) for widget in app.active.query(kind)]


def texts(app) -> list[str]:
    return [m.text for m in app.active.conversation.messages]


async def settled(pilot, count: int) -> None:
    """Wait until the active pane's path has ``count`` messages, no answer is on its way and all are drawn."""
    app = pilot.app
    pane = app.active

    def done() -> bool:
        drawn = len(pane.query(UserMessage)) + len(pane.query(AssistantMessage))
        return len(pane.conversation.messages) == count and app.queue.for_pane(pane) is None \
            and pane.pending_answer is None and drawn == count
    await wait_for(pilot, done, timeout=60)


@pytest.mark.slow
@run_async
async def test_regenerate_and_edit_keep_branches_that_keys_and_branch_switch_between(tiny_siglip):
    app = DsvlApp(Options(model=str(tiny_siglip), settings=GREEDY))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        conv = app.active.conversation
        await type_line(pilot, "first question")
        await settled(pilot, 2)
        await type_line(pilot, "second question")
        await settled(pilot, 4)
        old = conv.messages[3]
        await pilot.press("ctrl+r")  # /regenerate: the old answer is kept as a branch
        await settled(pilot, 4)
        new = conv.messages[3]
        assert new is not old and headers(app, AssistantMessage) == ["DeepSeek-VL", "DeepSeek-VL  \u2039 2/2 \u203a"]

        await pilot.press("alt+up")  # the previous version of the answer
        await wait_for(pilot, lambda: conv.messages[3] is old)
        await settled(pilot, 4)
        assert headers(app, AssistantMessage)[-1] == "DeepSeek-VL  \u2039 1/2 \u203a"
        await pilot.press("alt+down")
        await wait_for(pilot, lambda: conv.messages[3] is new)

        await type_line(pilot, "/edit 1")  # the first message, with all that followed it kept
        await wait_for(pilot, lambda: app.prompt.text == "first question")
        assert conv.messages == [] and "old version stays as a branch" in notices(app, error=False)[-1]
        app.prompt.load_text_at_end("first question, edited")
        await pilot.press("enter")
        await settled(pilot, 2)
        assert texts(app)[0] == "first question, edited"
        assert headers(app, UserMessage) == ["You  \u2039 2/2 \u203a"]

        await type_line(pilot, "/branch")
        listing = notices(app, error=False)[-1].splitlines()
        assert listing[0].startswith("branches (/branch N switches; Alt+Up / Alt+Down or /branch next|prev")
        assert listing[1:] == ['  1. 4 messages, from message 1: "first question"',
                               '  2. 4 messages, from message 1: "first question"',
                               "* 3. 2 messages (this one)"]
        await type_line(pilot, "/branch 1")
        await settled(pilot, 4)
        assert conv.messages[3] is old and headers(app, UserMessage) == ["You  \u2039 1/2 \u203a", "You"]
        assert notices(app, error=False)[-1].startswith("branch 1 of 3; 4 messages, the last: ")

        # Autosave keeps the tree: the journal's copy has the three branches and the path shown.
        def journaled() -> bool:
            try:
                saved = Journal().open(conv.id)
            except Exception:  # noqa: BLE001 - not written yet
                return False
            return [m.id for m in saved.messages] == [m.id for m in conv.messages]
        await wait_for(pilot, journaled, timeout=30)
        saved = Journal().open(conv.id)
        assert [[m.id for m in b.messages] for b in branches.branches(saved)] == \
            [[m.id for m in b.messages] for b in branches.branches(conv)]


@run_async
async def test_the_branch_keys_without_branches_say_so_in_one_line(tiny_siglip):
    app = DsvlApp(Options(model=str(tiny_siglip), settings=GREEDY))
    async with app.run_test() as pilot:
        await ready(pilot)
        await pilot.press("alt+down")
        await wait_for(pilot, lambda: notices(app, error=True))
        assert notices(app, error=True) == ["no message here has another version: /edit N and /regenerate make them"]


@run_async
async def test_in_a_browser_alt_up_as_xterm_js_sends_it_steps_from_the_input(web_mode):
    """xterm.js sends Alt+Up as ESC [1;3A: a key the input box does not take, so the screen's binding steps."""
    from textual._xterm_parser import XTermParser

    app = scripted_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        assert app.in_browser
        conv = app.active.conversation
        await type_line(pilot, "a question")
        await settled(pilot, 2)
        old = conv.messages[1]
        await type_line(pilot, "/regenerate")
        await settled(pilot, 2)
        assert conv.messages[1] is not old
        app.prompt.focus()
        app.prompt.load_text_at_end("draft")
        parser = XTermParser()
        [key] = [*parser.feed("\x1b[1;3A"), *parser.feed("")]
        assert key.key == "alt+up"
        app.post_message(key)
        await wait_for(pilot, lambda: conv.messages[1] is old)
        await settled(pilot, 2)
        assert headers(app, AssistantMessage) == ["DeepSeek-VL  \u2039 1/2 \u203a"] and app.prompt.text == "draft"


@pytest.mark.slow
@run_async
async def test_a_click_on_k_of_n_steps_that_message_and_the_keys_then_step_it_too():
    app = scripted_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        conv = app.active.conversation
        await type_line(pilot, "question")
        await settled(pilot, 2)
        await type_line(pilot, "/regenerate")
        await settled(pilot, 2)
        await type_line(pilot, "/edit")
        await wait_for(pilot, lambda: app.prompt.text == "question")
        app.prompt.load_text_at_end("question, edited")
        await pilot.press("enter")
        await settled(pilot, 2)
        shown = (headers(app, UserMessage), headers(app, AssistantMessage))
        assert shown == (["You  \u2039 2/2 \u203a"], ["DeepSeek-VL"])

        await pilot.press("alt+up")  # the last fork made: the edited message's
        await wait_for(pilot, lambda: conv.messages[0].text == "question")
        await settled(pilot, 2)
        # Below it, the branch written last: the regenerated answer.
        assert headers(app, AssistantMessage) == ["DeepSeek-VL  \u2039 2/2 \u203a"]

        label = app.active.query_one(AssistantMessage).query_one(".role", Label)
        await pilot.click(label, offset=(str(label.render()).index("\u2039"), 0))  # the answer's previous version
        await wait_for(pilot, lambda: headers(app, AssistantMessage) == ["DeepSeek-VL  \u2039 1/2 \u203a"])
        await pilot.press("alt+down")  # the keys now step the answer clicked, not the message above it
        await wait_for(pilot, lambda: headers(app, AssistantMessage) == ["DeepSeek-VL  \u2039 2/2 \u203a"])
        assert conv.messages[0].text == "question"
        label = app.active.query_one(UserMessage).query_one(".role", Label)
        await pilot.click(label, offset=(len(str(label.render())) - 1, 0))  # the message's next version
        await wait_for(pilot, lambda: conv.messages[0].text == "question, edited")
