"""Print an answer as it streams: plain text, or Markdown rendered block by block.

``PlainPrinter`` writes each chunk as it comes (made safe by ``printable``);
it is what pipes, files, dumb terminals and ``NO_COLOR`` get.

``MarkdownPrinter`` is for colour terminals. Rendering the whole answer
again for every chunk costs more as the answer grows, and a live region
taller than the screen cannot be redrawn, so the answer is cut into
finished blocks the way the TUI cuts it (``markdown_render.blocks``: a
block is finished once the next one has begun on a complete line; list
items are blocks of their own). Each finished block is drawn once, with
the TUI's look, and printed for good; only the unfinished tail lives in a
small live region, cropped to its last screenful, so the cost of a refresh
is the size of the tail and scrollback holds exactly the rendered answer.
"""

from __future__ import annotations

import time
from typing import TextIO

from dsvl_tui.core.text import printable
from dsvl_tui.markdown.render import finished_blocks, look_for, render_block


class PlainPrinter:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._last = "\n"

    def feed(self, chunk: str) -> None:
        text = printable(chunk)
        if text:
            self._out.write(text)
            self._out.flush()
            self._last = text[-1]

    def finish(self) -> None:
        if self._last != "\n":
            self._out.write("\n")
            self._out.flush()
        self._last = "\n"


class MarkdownPrinter:
    """Render the answer with rich as it streams; see the module docstring.

    The unfinished tail is drawn below the finished blocks and erased
    (carriage return, erase line, cursor up) before anything else is printed.
    Redraws are at least ``interval`` seconds apart, and further apart when a
    redraw is slow (a long code block), so drawing takes at most a fifth of
    the time and the model's thread keeps the rest. ``console`` is a
    ``rich.console.Console`` on a terminal.
    """

    def __init__(self, console, *, interval: float = 0.05) -> None:
        self._console = console
        self._interval = interval
        self._tail = ""
        self._tail_joined = False  # the tail continues a list whose items are printed above it
        self._look = look_for({}, dark=True)  # a terminal's colours are unknown: the TUI's default look
        self._rows = 0  # terminal rows the drawn tail takes
        self._next_draw = 0.0  # time.monotonic() after which the tail may be drawn again
        self._printed = 0  # blocks printed so far

    def feed(self, chunk: str) -> None:
        self._tail += chunk
        done, used, rest_joined = finished_blocks(self._tail, final=False, joined=self._tail_joined)
        if done:
            for block, joined in done:
                self._print_block(block, joined)
            self._tail, self._tail_joined = self._tail[used:], rest_joined
            self._draw_tail()
        elif time.monotonic() >= self._next_draw:
            self._draw_tail()

    def finish(self) -> None:
        self._erase_tail()
        for block, joined in finished_blocks(self._tail, final=True, joined=self._tail_joined)[0]:
            self._print_block(block, joined)
        self._tail, self._tail_joined = "", False
        self._console.file.flush()

    def _lines(self, text: str) -> list:
        """``text`` drawn as lines of segments (links shown with their address, no escapes)."""
        return render_block(text, self._console.width, self._look)

    def _write(self, lines: list, *, newline: bool) -> None:
        from rich.segment import Segment

        segments = [segment for i, line in enumerate(lines) for segment in ([Segment.line()] if i else []) + line]
        self._console.print(_Segments(segments + [Segment.line()] * newline))

    def _erase_tail(self) -> None:
        if self._rows:
            self._console.file.write("\r\x1b[2K" + "\x1b[1A\x1b[2K" * (self._rows - 1))
            self._rows = 0

    def _draw_tail(self) -> None:
        started = time.monotonic()
        self._erase_tail()
        lines = self._lines(self._tail)
        if lines and self._printed and not self._tail_joined:
            lines = [[]] + lines
        lines = lines[-max(1, self._console.size.height - 2):]  # at most a screenful
        if lines:
            self._write(lines, newline=False)
            self._rows = len(lines)
        self._console.file.flush()
        now = time.monotonic()
        self._next_draw = now + max(self._interval, 4 * (now - started))

    def _print_block(self, block: str, joined: bool) -> None:
        lines = self._lines(block)
        if not lines:
            return
        self._erase_tail()
        if self._printed and not joined:
            self._console.print()
        self._write(lines, newline=True)
        self._printed += 1


class _Segments:
    """Pre-rendered segments, printed as they are."""

    def __init__(self, segments: list) -> None:
        self._segments = segments

    def __rich_console__(self, console, options):
        yield from self._segments
