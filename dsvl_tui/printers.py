"""Print an answer as it streams: plain text, or Markdown rendered block by block.

``PlainPrinter`` writes each chunk as it comes (made safe by ``printable``);
it is what pipes, files, dumb terminals and ``NO_COLOR`` get.

``MarkdownPrinter`` is for colour terminals. Rendering the whole answer
again for every chunk costs more as the answer grows, and a live region
taller than the screen cannot be redrawn, so the answer is cut into
finished blocks: a block is done at a blank line outside a code fence once
the next line has started and is not indented (an indented line may still
belong to a list item). Each finished block is rendered once, through rich,
and printed for good; only the unfinished tail lives in a small
``rich.live.Live`` region, cropped to its last screenful, so the cost of a
refresh is the size of the tail and scrollback holds exactly the rendered
answer.
"""

from __future__ import annotations

import re
import time
from typing import TextIO

from .text import printable

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")


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


def finished_prefix(text: str) -> int:
    """Length of the longest prefix of ``text`` made of finished Markdown blocks."""
    cut = 0
    fence: str | None = None
    blank_end: int | None = None  # where the latest blank line outside a fence ends
    position = 0
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):  # the last line, still being written
            if fence is None and blank_end is not None and not line[0].isspace():
                cut = blank_end
            break
        position += len(line)
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                fence = None
            continue
        if not stripped:
            blank_end = position
            continue
        if blank_end is not None and not line[0].isspace():
            cut = blank_end
        blank_end = None
        match = _FENCE.match(line)
        if match:
            fence = match.group(1)
    return cut


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
        self._rows = 0  # terminal rows the drawn tail takes
        self._next_draw = 0.0  # time.monotonic() after which the tail may be drawn again
        self._blocks = 0

    def feed(self, chunk: str) -> None:
        self._tail += chunk
        cut = finished_prefix(self._tail)
        if cut:
            block, self._tail = self._tail[:cut], self._tail[cut:]
            self._print_block(block)
            self._draw_tail()
        elif time.monotonic() >= self._next_draw:
            self._draw_tail()

    def finish(self) -> None:
        block, self._tail = self._tail, ""
        self._erase_tail()
        self._print_block(block)
        self._console.file.flush()

    def _lines(self, text: str) -> list:
        """``text`` rendered as lines of segments, without blank lines around it."""
        from rich.markdown import Markdown

        # Model text is untrusted: no escape sequences, and links shown as text
        # (a terminal hyperlink could hide where it goes).
        markdown = Markdown(printable(text), hyperlinks=False)
        lines = self._console.render_lines(markdown, self._console.options, pad=False)
        filled = [i for i, line in enumerate(lines) if "".join(segment.text for segment in line).strip()]
        return lines[filled[0]:filled[-1] + 1] if filled else []

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
        lines = self._lines(self._tail)[-max(1, self._console.size.height - 2):]  # at most a screenful
        if lines:
            self._write(lines, newline=False)
            self._rows = len(lines)
        self._console.file.flush()
        now = time.monotonic()
        self._next_draw = now + max(self._interval, 4 * (now - started))

    def _print_block(self, block: str) -> None:
        lines = self._lines(block)
        if not lines:
            return
        self._erase_tail()
        if self._blocks:
            self._console.print()
        self._write(lines, newline=True)
        self._blocks += 1


class _Segments:
    """Pre-rendered segments, printed as they are."""

    def __init__(self, segments: list) -> None:
        self._segments = segments

    def __rich_console__(self, console, options):
        yield from self._segments
