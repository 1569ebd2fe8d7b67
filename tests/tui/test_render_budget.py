"""Answers that froze the TUI (issue 20, section 4), streamed through the app on the scripted engine.

Each used to take from 15 seconds to minutes to draw, on the event loop, so
no key was read meanwhile (Ctrl+Q was ignored for over two minutes). What is
asserted is structural, not a wall time (the machine is shared): no step of
drawing hands markdown-it more than ``STEP_CHARS`` characters (it takes
~30 µs a line), the block too costly to draw is shown as it is, as plain
text, and typed keys, Escape and Ctrl+Q do their work while the answer
streams and after. The timings are in ``python -m dsvl_tui.bench.render``.
"""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt
from process_support import PROCESS_TIMEOUT
from tui_support import ScriptedEngine, ready, run_async, screen_text, scripted_app, type_line, wait_for

from dsvl_tui.markdown import budget
from dsvl_tui.markdown.budget import STEP_CHARS
from dsvl_tui.tui.widgets import AssistantMessage


def table(columns: int, rows: int = 3) -> str:
    row = "|" + "|".join("v" for _ in range(columns)) + "|\n"
    return "|" + "|".join(f"c{i}" for i in range(columns)) + "|\n|" + "---|" * columns + "\n" + row * rows


ANSWERS = {  # the answer, and what the screen shows of it as plain text (Markdown would not show it so)
    "emphasis": ("a*" * 50_000, "a*a*a*a*a*"),  # 100 KB; Markdown: italics, no stars
    "lines": ("x\n" * 200_000, "\nx\nx\nx\n"),  # Markdown: one paragraph, "x x x x"
    "wide table": (table(3000), "|v|v|v|v|"),  # Markdown: box-drawn columns
    "deep list": ("- " * 3000 + "x\n", "- - - - - -"),  # a list nested 3000 deep; Markdown: bullets (or nothing)
}


def pieces(text: str, size: int = 400) -> list[str]:
    return [text[start:start + size] for start in range(0, len(text), size)]


@pytest.fixture
def parsed(monkeypatch) -> list[int]:
    """The length of every text handed to markdown-it (the block cut's and rich's parses alike)."""
    sizes: list[int] = []
    real = MarkdownIt.parse

    def parse(self, src, env=None):
        sizes.append(len(src))
        return real(self, src, env)

    monkeypatch.setattr(MarkdownIt, "parse", parse)
    return sizes


def _answer(app) -> AssistantMessage:
    return app.active.query(AssistantMessage).last()


def _shown_lines(app) -> str:
    """What the screen shows, each line without the answer's border and padding."""
    return "\n".join(line.strip(" ▌▐┃│█") for line in screen_text(app).splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ANSWERS))
@run_async
async def test_a_costly_answer_is_shown_as_plain_text_and_keys_still_work(name, parsed):
    text, plain = ANSWERS[name]
    chunks = pieces(text)
    half = len(chunks) // 2
    backend = ScriptedEngine(chunks, hold_after=half)
    app = scripted_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await type_line(pilot, "go")
        await wait_for(pilot, lambda: app.queue.running is not None and len(app.queue.running.streamed) == half)
        answer = _answer(app)
        await wait_for(pilot, lambda: answer.markdown.drawn_length == len("".join(chunks[:half])) == len(answer.text),
                       timeout=PROCESS_TIMEOUT)
        await pilot.press("o", "k")  # typing reaches the input while the answer is on screen
        await wait_for(pilot, lambda: app.prompt.text == "ok")
        backend.gate.set()
        await wait_for(pilot, lambda: app.queue.for_pane(app.active) is None, timeout=PROCESS_TIMEOUT)
        await wait_for(pilot, lambda: answer.markdown.drawn_length == len(text), timeout=PROCESS_TIMEOUT)
        assert plain in _shown_lines(app)
        if len(text.splitlines()) > budget.SHOW_LINES:  # past its lines the rest is counted, not laid out
            assert "more characters not shown: /copy or /save has the whole answer" in _shown_lines(app)
            assert answer.markdown.size.height < budget.SHOW_LINES + budget.PLAIN_LINES
        assert parsed and max(parsed) <= STEP_CHARS  # no step of drawing parses more than its budget
        assert len(answer.query("*")) == 3  # one widget of lines, whatever the answer holds
        [stored] = [m for m in app.active.conversation.messages if m.role == "assistant"]
        assert stored.text == text  # shown plain, kept whole
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: app.return_code is not None)
    assert app.return_code == 0


@pytest.mark.slow
@run_async
async def test_escape_stops_a_costly_answer_and_ctrl_q_quits_while_it_is_drawn(parsed, monkeypatch):
    monkeypatch.setattr(budget, "SHOW_LINES", 10**7)  # every line drawn: hundreds of steps
    text, plain = ANSWERS["lines"]
    chunks = pieces(text, 20_000)
    backend = ScriptedEngine(chunks, hold_after=2)
    app = scripted_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await type_line(pilot, "go")
        await wait_for(pilot, lambda: app.queue.running is not None and len(app.queue.running.streamed) == 2)
        answer = _answer(app)
        await pilot.press("escape")  # handled between drawing steps: the answer stops where it is
        await wait_for(pilot, lambda: app.queue.for_pane(app.active) is None)
        [stored] = [m for m in app.active.conversation.messages if m.role == "assistant"]
        assert stored.stopped and stored.text == "".join(chunks[:2])
        answer.markdown.update(text * 4)  # 1.6 MB at once (as a saved answer is shown): drawn over many frames
        await pilot.pause()
        assert 0 < answer.markdown.drawn_length < len(text)  # a step, not the whole
        await pilot.press("ctrl+q")  # quits long before the rest would be drawn
        await wait_for(pilot, lambda: app.return_code is not None)
        assert answer.markdown.drawn_length < len(text * 4)
    assert app.return_code == 0
    assert max(parsed) <= STEP_CHARS
