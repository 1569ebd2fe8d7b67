"""Selecting and copying text in answers: mouse selection in the line-API answer view, the copy key,
a click on a code block, and ``/copy N`` / ``/copy code N`` through the app's one clipboard path."""

from __future__ import annotations

import base64

import pytest
from tui_support import Host, ScriptedEngine, ready, run_async, scripted_app, type_line, wait_for

from dsvl_tui.tui import clipboard
from dsvl_tui.tui.widgets import AssistantMessage
from dsvl_tui.tui.widgets._markdown_view import MarkdownView

ANSWER = (
    "Here is **the fix** for it.\n\n"
    "```python\n"
    "x = compute(1)\n"
    "print(x)\n"
    "```\n\n"
    "- first point\n"
    "- second, with code:\n\n"
    "  ```sh\n"
    "  make test\n"
    "  ```\n\n"
    "Done."
)


@pytest.fixture(autouse=True)
def _outside_tmux(monkeypatch):
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def _terminal(app) -> list[str]:
    """What the app writes to the terminal from now on (the headless driver drops it)."""
    written: list[str] = []
    app._driver.write = written.append
    return written


def _osc52_texts(written: list[str]) -> list[str]:
    return [base64.b64decode(s.split(";", 2)[2].rstrip("\x07")).decode() for s in written if s.startswith("\x1b]52;")]


def _toasts(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def _line_of(view: MarkdownView, text: str) -> tuple[int, int]:
    """(x, y) of ``text`` in what the view draws."""
    for y, line in enumerate(view._drawn.lines()):
        shown = "".join(segment.text for segment in line)
        if text in shown:
            return shown.index(text), y
    raise AssertionError(f"{text!r} is not drawn")


async def _answered_app(pilot, *answers: str):
    app = pilot.app
    await ready(pilot)
    backend = app.engine
    for number, answer in enumerate(answers, 1):
        backend.chunks = [answer[i:i + 7] for i in range(0, len(answer), 7)]
        await type_line(pilot, f"question {number}")
        await wait_for(pilot, lambda n=number: len(app.active.query(AssistantMessage)) == n
                       and app.active.query(AssistantMessage).last().state == "done")
    await pilot.pause()
    return app.active.query(AssistantMessage).last().markdown


@pytest.mark.slow
@run_async
async def test_drag_over_an_answer_selects_what_it_shows_and_the_copy_key_copies_it() -> None:
    app = scripted_app(ScriptedEngine())
    async with app.run_test(size=(80, 40)) as pilot:
        view = await _answered_app(pilot, ANSWER)
        x0, y0 = _line_of(view, "the fix")
        x1, y1 = _line_of(view, "print(x)")
        await pilot.mouse_down(view, offset=(x0 + 4, y0))
        await pilot.hover(view, offset=(x1 + 4, y1))
        await pilot.mouse_up(view, offset=(x1 + 4, y1))
        await pilot.pause()
        assert app.screen.selections.keys() == {view}
        # what is drawn: a blank line, the code block's blank top row and its one-cell margin
        expected = "fix for it.\n\n\n x = compute(1)\n print"
        assert app.screen.get_selected_text() == expected
        written = _terminal(app)
        await pilot.press("ctrl+c")  # the input box has the focus and nothing selected: the screen copies
        await pilot.pause()
        assert _osc52_texts(written) == [expected] and app.clipboard == expected
        assert f"copied 5 lines ({len(expected)} characters)" in _toasts(app)


@run_async
async def test_the_selection_is_highlighted_on_the_selected_characters_only() -> None:
    view = MarkdownView("alpha beta gamma")
    async with Host(view).run_test(size=(40, 5)) as pilot:
        await pilot.pause()
        await pilot.mouse_down(view, offset=(6, 0))
        await pilot.hover(view, offset=(9, 0))
        await pilot.mouse_up(view, offset=(9, 0))
        await pilot.pause()
        assert pilot.app.screen.get_selected_text() == "beta"
        background = view._selection_style().bgcolor
        assert background is not None
        shaded = "".join(segment.text for segment in view.render_line(0) if segment.style.bgcolor == background)
        assert shaded == "beta"
        # every segment says where it is: the screen reads that to select
        assert all(segment.style.meta.get("offset") is not None for segment in view.render_line(0))


@pytest.mark.slow
@run_async
async def test_a_click_on_a_code_block_copies_its_code_and_a_drag_does_not() -> None:
    app = scripted_app(ScriptedEngine())
    async with app.run_test(size=(80, 40)) as pilot:
        view = await _answered_app(pilot, ANSWER)
        written = _terminal(app)
        x, y = _line_of(view, "print(x)")
        await pilot.click(view, offset=(x + 2, y))
        await pilot.pause()
        assert _osc52_texts(written) == ["x = compute(1)\nprint(x)"]
        x, y = _line_of(view, "make test")  # a code block inside a list item
        await pilot.click(view, offset=(x, y))
        await pilot.pause()
        assert _osc52_texts(written)[-1] == "make test"
        x, y = _line_of(view, "first point")  # not code: nothing
        await pilot.click(view, offset=(x, y))
        await pilot.pause()
        assert len(_osc52_texts(written)) == 2
        assert view.code_block_at(y) is None
        x, y = _line_of(view, "compute")
        assert view.code_block_at(y) == (1, "x = compute(1)\nprint(x)")
        assert view.code_block_at(_line_of(view, "make test")[1]) == (2, "make test")


@pytest.mark.slow
@run_async
async def test_copy_code_n_and_copy_of_earlier_answers() -> None:
    app = scripted_app(ScriptedEngine())
    async with app.run_test(size=(80, 30)) as pilot:
        await _answered_app(pilot, "First answer.", "Second answer.", ANSWER)
        written = _terminal(app)
        await type_line(pilot, "/copy code")
        await type_line(pilot, "/copy code 1")
        await type_line(pilot, "/copy code -2")
        await type_line(pilot, "/copy 1")
        await type_line(pilot, "/copy -2")
        await type_line(pilot, "/copy")
        assert _osc52_texts(written) == ["make test", "x = compute(1)\nprint(x)", "x = compute(1)\nprint(x)",
                                         "First answer.", "Second answer.", ANSWER]
        shown = [n.text for n in app.active.query("Notice")]
        assert "copied code block 2 of 2 (1 line)" in shown
        assert "copied answer 1 of 3 (13 characters)" in shown
        assert f"copied the last answer ({len(ANSWER)} characters)" in shown


@pytest.mark.slow
@run_async
async def test_a_bad_number_says_how_many_there_are_and_copies_nothing() -> None:
    app = scripted_app(ScriptedEngine())
    async with app.run_test(size=(80, 30)) as pilot:
        await _answered_app(pilot, "One.", ANSWER)
        written = _terminal(app)
        errors = []
        for line in ("/copy code 3", "/copy 5", "/copy 0", "/copy two", "/copy 1 2"):
            await type_line(pilot, line)
            errors.append([n.text for n in app.active.query("Notice") if n.is_error][-1])
        assert errors == [
            "no code block 3: there are 2 (/copy code 1 to 2, or -1 for the last)",
            "no answer 5: there are 2 (/copy 1 to 2, or -1 for the last)",
            "no answer 0: there are 2 (/copy 1 to 2, or -1 for the last)",
            "/copy takes a number (1 = the first, -1 = the last), not 'two'",
            "usage: /copy [N | code [N]]",
        ]
        await type_line(pilot, "/copy code")  # after all that, still usable
        assert _osc52_texts(written) == ["make test"]


@pytest.mark.slow
@run_async
async def test_inside_tmux_that_lets_nothing_through_copy_says_what_to_set_not_copied(monkeypatch) -> None:
    monkeypatch.setenv("TMUX", "/tmp/tmux-0/default,1,0")

    def old_tmux(args, stdin=b""):  # no load-buffer -w, set-clipboard external, passthrough off
        return (1, "") if args[0] == "load-buffer" else (0, "external" if args[-1] == "set-clipboard" else "off")

    monkeypatch.setattr(clipboard, "run_tmux", old_tmux)
    app = scripted_app(ScriptedEngine())
    async with app.run_test(size=(80, 30)) as pilot:
        await _answered_app(pilot, "An answer.")
        written = _terminal(app)
        await type_line(pilot, "/copy")
        notices = [(n.text, n.is_error) for n in app.active.query("Notice")]
        assert notices[-1] == (clipboard.SET_CLIPBOARD_HINT, True)
        assert not any(text.startswith("copied") for text, _ in notices)
        assert written == []


@pytest.mark.slow
@run_async
async def test_inside_tmux_copy_goes_through_tmux(monkeypatch) -> None:
    monkeypatch.setenv("TMUX", "/tmp/tmux-0/default,1,0")
    calls = []

    def tmux(args, stdin=b""):
        calls.append((list(args), stdin))
        return 0, ""

    monkeypatch.setattr(clipboard, "run_tmux", tmux)
    app = scripted_app(ScriptedEngine())
    async with app.run_test(size=(80, 30)) as pilot:
        await _answered_app(pilot, "An answer.")
        written = _terminal(app)
        await type_line(pilot, "/copy")
        assert calls == [(["load-buffer", "-w", "-"], b"An answer.")] and written == []
        assert [n.text for n in app.active.query("Notice")][-1] == "copied the last answer (10 characters)"


@run_async
async def test_code_blocks_are_found_the_same_while_the_answer_streams_and_after_a_resize() -> None:
    whole = MarkdownView(ANSWER)
    streamed = MarkdownView()
    async with Host(whole).run_test(size=(60, 30)) as pilot:
        await pilot.app.mount(streamed)
        for start in range(0, len(ANSWER), 5):  # a frame after each piece: blocks finish one by one
            streamed.append(ANSWER[start:start + 5])
            await pilot.pause()
        await pilot.pause()
        lines = whole._drawn.line_count
        assert streamed._drawn.line_count == lines
        expected = [whole.code_block_at(y) for y in range(lines)]
        assert [streamed.code_block_at(y) for y in range(lines)] == expected  # the last block still open
        assert {found for found in expected if found} == {(1, "x = compute(1)\nprint(x)"), (2, "make test")}
        streamed.finish()
        await pilot.resize_terminal(30, 30)
        await pilot.pause()
        y = _line_of(streamed, "make test")[1]
        assert streamed.code_block_at(y) == (2, "make test")


@pytest.mark.slow
@run_async
async def test_after_selecting_and_copying_typed_keys_go_to_the_input() -> None:
    """After a mouse selection and Ctrl+C, typing went nowhere until a click (issue 26, item 3)."""
    app = scripted_app(ScriptedEngine())
    async with app.run_test(size=(80, 40)) as pilot:
        view = await _answered_app(pilot, ANSWER)
        x0, y0 = _line_of(view, "the fix")
        await pilot.click(view, offset=(x0, y0))  # a click on the conversation takes the focus from the input
        await pilot.mouse_down(view, offset=(x0, y0))
        await pilot.mouse_up(view, offset=(x0 + 6, y0))
        await pilot.press("ctrl+c")
        if app.focused is app.prompt:  # the click may leave the focus in the input; move it away as a user can
            app.active.focus()
            await pilot.pause()
        assert app.focused is not app.prompt
        app.prompt.load_text_at_end("draft ")
        await pilot.press("n", "e", "x", "t")
        assert app.focused is app.prompt and app.prompt.text == "draft next"
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.active.query(AssistantMessage)) == 2)
        assert app.active.conversation.messages[-2].text == "draft next"
