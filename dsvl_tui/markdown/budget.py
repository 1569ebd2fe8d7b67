"""What a Markdown block may cost to draw, checked before it is parsed; the plain text shown instead.

A model answer can be anything: 100 KB of ``a*`` (50,000 emphasis
delimiters), 200,000 short lines, a table 3,000 columns wide, a list nested
3,000 deep. Parsing and drawing such a block through markdown-it and rich
takes seconds to minutes, all on the UI's event loop, where no key is read
meanwhile. So each block is measured first with a few counts that cost one
pass in C over its text (``too_costly``), and one over any budget is drawn
as plain text (``render_plain``: no markup, wrapped to the width), which
costs about as much as its length.

The budgets come from timing ``render_block`` on this project's slowest
kinds of block (``python -m dsvl_tui.bench.render`` prints what the four
answers above cost now): a block within all of them draws in well under
100 ms on a busy 2-core machine. Above ``STEP_CHARS`` / ``STEP_LINES`` the
text is not even handed to the block parser at once (``DrawnMarkdown`` cuts
it), and a region shown plain is cut into units of ``PLAIN_CHARS`` /
``PLAIN_LINES``, so no single step of drawing grows with the answer.
"""

from __future__ import annotations

import io
import re

from rich.console import Console
from rich.segment import Segment
from rich.text import Text

from dsvl_tui.core.text import printable

BLOCK_CHARS = 8_000
"""A block longer than this is plain (rich draws prose at ~1 µs a character, code at ~10)."""
BLOCK_LINES = 400
"""A block of more lines than this is plain (a table's rows cost ~0.4 ms each)."""
DELIMITERS = 1_000
"""Emphasis and code delimiters (``*``, ``_``, ``~``, backticks) a block may hold (``a*`` x 50,000)."""
TABLE_COLUMNS = 40
"""Cells in one table row (more than 40 are a character or two wide on any terminal anyway)."""
TABLE_CELLS = 800
"""``|`` in a block: table cells (rich measures every cell of every row)."""
DEPTH = 12
"""Lists and quotes nested in one another (markdown-it drops what is deeper than 20, and rich
indents each level, so a deep one is squeezed to nothing)."""

STEP_CHARS = 16_000
"""Text handed to the block parser in one drawing step (markdown-it takes ~30 µs a line)."""
STEP_LINES = 500
PLAIN_CHARS = 16_000
"""A unit of text shown plain: drawn once, and again only when scrolled back to."""
PLAIN_LINES = 500

SHOW_LINES = 10_000
"""Lines of one text drawn; what follows is counted in a note instead. Textual files each widget
under every 20-line square of the screen it covers, on every layout: an answer 200,000 lines
tall made each frame take a second, whatever was drawn in it."""
NOT_SHOWN = "\u2026 {:,} more characters not shown: /copy or /save has the whole answer"

_DELIMITER = re.compile(r"[*_~`]")
_NESTING = re.compile(r"^([ \t]*)((?:>[ \t]*|(?:[-+*]|\d{1,9}[.)])(?:[ \t]+|$))+)", re.MULTILINE)
_MARKER = re.compile(r">|[-+*]|\d{1,9}[.)]")
_FENCED = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)


def too_costly(source: str) -> str | None:
    """Why drawing ``source`` as Markdown would cost more than its budget (None: it would not).
    Counts only: nothing here parses."""
    if len(source) > BLOCK_CHARS:
        return f"over {BLOCK_CHARS:,} characters"
    if source.count("\n") > BLOCK_LINES:
        return f"over {BLOCK_LINES:,} lines"
    if len(_DELIMITER.findall(source)) > DELIMITERS:
        return f"over {DELIMITERS:,} emphasis marks"
    if "|" in source:
        if source.count("|") > TABLE_CELLS:
            return f"over {TABLE_CELLS:,} table cells"
        if max(line.count("|") for line in source.split("\n")) > TABLE_COLUMNS + 1:
            return f"over {TABLE_COLUMNS} table columns"
    if nesting(source) > DEPTH:
        return f"nested over {DEPTH} deep"
    return None


def nesting(source: str) -> int:
    """How deep lists and quotes nest in ``source``, at most: on each line, the markers it starts
    with (``- - > 1. x``: 4) plus its indent in pairs of spaces (an item under an item)."""
    deepest = 0
    if "```" in source or "~~~" in source:  # code is not nested, however far it is indented (YAML lists)
        source = _FENCED.sub("", source)
    for match in _NESTING.finditer(source):
        indent = len(match.group(1).expandtabs(4)) // 2
        deepest = max(deepest, indent + len(_MARKER.findall(match.group(2))))
    return deepest


def render_plain(source: str, width: int, console: Console | None = None) -> list[list[Segment]]:
    """``source`` as it is, wrapped ``width`` cells wide, without blank lines at its end.

    Lines of plain ASCII are cut at every ``width`` characters straight away
    (rich's ``Text`` wrapping takes ~0.3 ms a line: 200,000 short lines
    would take a minute); others go through rich, which knows wide
    characters."""
    source = printable(source).rstrip()
    if not source:
        return []
    width = max(1, width)
    lines: list[list[Segment]] = []
    for line in source.split("\n"):
        if line.isascii() and "\t" not in line:
            if len(line) <= width:
                lines.append([Segment(line)] if line else [])
            else:
                lines.extend([Segment(line[start:start + width])] for start in range(0, len(line), width))
            continue
        console = console or Console(file=io.StringIO(), width=width, force_terminal=True, color_system="truecolor",
                                     legacy_windows=False, emoji=False, highlight=False)
        text = Text(line, no_wrap=False, overflow="fold", tab_size=4)
        lines.extend(console.render_lines(text, console.options.update_width(width), pad=False))
    return lines


def line_end(text: str, chars: int, lines: int) -> int:
    """Where the first ``chars`` characters and ``lines`` lines of ``text`` end, at the end of a
    line (all of ``text`` if it is within both; 0 if no line ends within them)."""
    if len(text) <= chars and text.count("\n", 0, chars) <= lines:
        return len(text)
    end = text.rfind("\n", 0, chars) + 1
    if text.count("\n", 0, end) > lines:
        end = 0
        for _ in range(lines):
            end = text.index("\n", end) + 1
    return end


_PLAIN_STOP = re.compile(r"^[ \t]*(?:(`{3,}|~{3,})([^\n]*))?\n", re.MULTILINE)


def plain_cut(text: str, fence: str | None, *, final: bool) -> tuple[int, bool, str | None]:
    """How much of ``text`` (which continues a region shown plain) to take as the next unit.

    A region shown plain ends after its first blank line outside a code
    fence (where Markdown would start a new block, roughly: it is plain
    either way); ``fence`` is the fence open at its start. Returns the
    unit's length (0: nothing yet, wait for more text), whether the region
    ends there, and the fence open after the unit. A unit stops at
    ``PLAIN_LINES`` lines or ``PLAIN_CHARS`` characters (a line longer than
    that is cut in the middle: plain text shows the same either way, only
    wrapped at a different place).
    """
    limit = line_end(text, PLAIN_CHARS, PLAIN_LINES)
    for match in _PLAIN_STOP.finditer(text, 0, limit):
        marks = match.group(1)
        if marks is None:
            if fence is None:
                return match.end(), True, None
        elif fence is None:
            fence = marks
        elif marks[0] == fence[0] and len(marks) >= len(fence) and not match.group(2).strip():
            fence = None
    if final and limit == len(text):
        return len(text), True, None
    if limit == len(text):  # within the limits: the rest is still being written
        return 0, False, fence
    if limit == 0:  # one line longer than a unit
        return PLAIN_CHARS, False, fence
    return limit, False, fence
