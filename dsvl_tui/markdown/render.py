"""Markdown cut into top-level blocks and rendered block by block, through rich.

A streamed answer only ever changes at its end, and in Markdown everything
but the last top-level block is final once the next block has begun on a
complete line (a later line can still turn the line being written into a
list item or a heading underline of the block before, never an earlier
one). So a renderer can draw each finished block once, keep its lines, and
redraw only the last block as text arrives: the cost of an update is the
size of that block, not of the answer. Lists are cut into their items the
same way. ``finished_blocks`` finds the finished blocks, ``render_block``
draws one, and ``DrawnMarkdown`` keeps the lines of a growing text that way
(``widgets.MarkdownView`` shows them; the plain REPL's ``MarkdownPrinter``
prints each block as it is finished).

Blocks are found by markdown-it-py, configured as rich's own ``Markdown``
parses, so the cut and the rendering agree. What a block may cost to draw,
and the plain text drawn instead, is in ``markdown.budget``; how it looks,
in ``markdown.look``.
"""

from __future__ import annotations

import bisect
import io
import re
from collections import OrderedDict
from functools import lru_cache
from typing import NamedTuple

from markdown_it import MarkdownIt
from rich.console import Console
from rich.segment import Segment
from rich.style import Style

from dsvl_tui.markdown import budget
from dsvl_tui.markdown.budget import line_end, plain_cut, render_plain, too_costly
from dsvl_tui.markdown.look import AnswerMarkdown, MarkdownLook, look_for

__all__ = ["AnswerMarkdown", "Block", "DrawnMarkdown", "MarkdownLook", "blocks", "code_blocks", "finished_blocks",
           "is_code_block", "look_for", "render_block"]

_NEWLINE = re.compile("\n")
_NOTE = Style(dim=True, italic=True)


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    # Blocks only: what is cut here needs no inline parse (rich does its own), and the inline
    # rules are the dear part of markdown-it on text such as ``a*a*a*...`` (70x here).
    return MarkdownIt().enable("strikethrough").enable("table").disable("inline")


class Block(NamedTuple):
    """Where a unit of drawing starts in the text, and whether it continues the one before
    without a blank line between (the next item of the same list)."""

    start: int
    joined: bool


def blocks(text: str) -> list[Block]:
    """The units ``text`` is drawn in: its top-level blocks, with each list cut into its items
    (an answer that is one long list would otherwise be redrawn whole for every token)."""
    line_offsets = [0] + [match.end() for match in _NEWLINE.finditer(text)]
    found: list[Block] = []
    first_item = False
    for token in _parser().parse(text):
        if token.map is None:  # closing tokens
            continue
        if token.level == 0 and token.type in ("bullet_list_open", "ordered_list_open"):
            first_item = True
        elif token.level == 0 and token.nesting >= 0:
            found.append(Block(line_offsets[token.map[0]], False))
        elif token.level == 1 and token.type == "list_item_open":
            found.append(Block(line_offsets[token.map[0]], not first_item))
            first_item = False
    return found


def finished_blocks(text: str, *, final: bool, joined: bool = False) -> tuple[list[tuple[str, bool]], int, bool]:
    """The blocks at the start of ``text`` that no further text can change.

    While more may follow (``final`` false), that is every block but the
    last, counting complete lines only: the line being written could still
    become part of the block before it (``2`` on its way to ``2. item``).
    ``joined`` says whether ``text``'s first block continues a list cut
    before it. Returns the blocks as ``(source, joined)``, the length of
    ``text`` they take, and whether the rest continues the last one's list.
    """
    found = blocks(text if final else text[:text.rfind("\n") + 1])
    if found:
        found[0] = Block(found[0].start, joined)
    done = found if final else found[:-1]
    rest = found[len(done)] if len(found) > len(done) else None
    used = rest.start if rest is not None else len(text) if done else 0
    ends = [block.start for block in found[1:]] + [len(text)]
    pieces = [(text[block.start:end], block.joined) for block, end in zip(done, ends, strict=False)]
    return pieces, used, bool(rest and rest.joined)


def code_blocks(text: str) -> list[str]:
    """The code of ``text``'s fenced and indented code blocks, in order (those inside lists too)."""
    return [token.content.removesuffix("\n") for token in _parser().parse(text)
            if token.type in ("fence", "code_block")]


def is_code_block(text: str) -> bool:
    """Whether ``text`` is one code block and nothing else."""
    top = [token for token in _parser().parse(text) if token.level == 0 and token.nesting >= 0]
    return len(top) == 1 and top[0].type in ("fence", "code_block")


# --- drawing ---------------------------------------------------------------------------------


def _blank(line: list[Segment]) -> bool:
    return all(not segment.text.strip() and not (segment.style and segment.style.bgcolor) for segment in line)


def render_block(source: str, width: int, look: MarkdownLook) -> list[list[Segment]]:
    """``source`` drawn ``width`` cells wide as lines of segments, without blank lines around it
    (rows of a code block's background stay); as plain text if that would cost more than a
    block's budget (``budget.too_costly``)."""
    console = Console(file=io.StringIO(), width=max(1, width), color_system="truecolor", force_terminal=True,
                      theme=look.theme, legacy_windows=False, emoji=False, highlight=False)
    if too_costly(source):
        return render_plain(source.lstrip("\n"), width, console)
    lines = console.render_lines(AnswerMarkdown(source, code_theme=look.code_theme),
                                 console.options.update_width(max(1, width)), pad=False)
    start, end = 0, len(lines)
    while start < end and _blank(lines[start]):
        start += 1
    while end > start and _blank(lines[end - 1]):
        end -= 1
    return lines[start:end]


class DrawnMarkdown:
    """The lines of a growing Markdown text: finished blocks drawn once, the last one on demand.

    ``append`` and ``finish`` only record; ``draw(width, look)`` brings the
    lines up to date (the caller does it once per frame, however many
    chunks came in between). Drawing a text in pieces gives exactly the
    lines drawing it whole does. Only the lines of the last ``KEEP_DRAWN``
    finished blocks used are kept (a long answer, or a long chat of them,
    would otherwise hold every line it ever drew, and every full garbage
    collection would walk them); others are drawn again when asked for,
    which only scrolling back does.

    No drawing step grows with the text: ``draw`` hands the block parser at
    most ``STEP_CHARS`` / ``STEP_LINES`` of it, and when more is waiting
    (a whole saved answer, a burst of text, a new width) it draws that much
    and says so (``pending``): the caller draws again on a later frame, and
    keys are read in between. A block over its budget is drawn as plain
    text (``render_block``); a block bigger than a whole step starts a
    region shown plain, which runs to the next blank line outside a code
    fence and is drawn in units of ``PLAIN_LINES`` lines. Past
    ``SHOW_LINES`` lines, the rest of the text is not drawn but counted, in
    a note after them.
    """

    KEEP_DRAWN = 64

    def __init__(self, source: str = "") -> None:
        self._source = source
        self._appended: list[str] = []  # text appended since ``source`` was last joined
        self.final = True  # a text given whole is finished; ``append`` says more may follow
        self._drawn_for: tuple[int, tuple] | None = None  # (width, look key) of the lines
        self._look: MarkdownLook | None = None
        self._restart()

    def _restart(self) -> None:
        """Forget every line drawn (a new width or look: all heights change)."""
        self._frozen_end = 0  # source[:_frozen_end] is in _blocks
        self._blocks: list[tuple[str, bool]] = []  # finished blocks: (source, joined to the one before)
        self._plain: list[bool] = []  # whether each is a unit of a region shown plain
        self._tops: list[int] = []  # the line each finished block starts at (its blank line above included)
        self._gaps: list[bool] = []  # whether it has that blank line above
        self._starts: list[int] = []  # where each finished block starts in source (any width)
        self._finished_lines = 0
        self._kept: OrderedDict[int, list[list[Segment]]] = OrderedDict()  # block index -> its lines
        self._tail_joined = False  # the last block continues a list whose items are above it
        self._in_plain = False  # source[_frozen_end:] continues a region shown plain
        self._fence: str | None = None  # the code fence open there, if so
        self._tail: list[list[Segment]] = []
        self._dirty = True
        self.drawn_length = 0
        """How much of ``source`` the lines show (past ``SHOW_LINES``, with the note counting the rest)."""

    @property
    def source(self) -> str:
        """All the text so far."""
        if self._appended:  # joined when read, not on each append: a string grown by += is copied whole each time
            self._source += "".join(self._appended)
            self._appended.clear()
        return self._source

    def append(self, text: str) -> None:
        if text:
            self._appended.append(text)
            self.final, self._dirty = False, True

    def finish(self) -> None:
        if not self.final:
            self.final, self._dirty = True, True

    @property
    def pending(self) -> bool:
        """Whether text is waiting to be drawn (call ``draw`` again, on a later frame)."""
        return self._dirty

    def drawn_at(self, width: int, look: MarkdownLook) -> bool:
        """Whether the lines were last drawn for ``width`` and ``look``."""
        return self._drawn_for == (width, look.key)

    @property
    def line_count(self) -> int:
        return self._finished_lines + len(self._tail)

    def line(self, y: int) -> list[Segment]:
        """Line ``y`` as last drawn (no line: empty)."""
        if y >= self._finished_lines:
            y -= self._finished_lines
            return self._tail[y] if 0 <= y < len(self._tail) else []
        index = bisect.bisect_right(self._tops, y) - 1
        return self._block_lines(index)[y - self._tops[index]] if index >= 0 else []

    def unit_at(self, y: int) -> tuple[int, int] | None:
        """Where in ``source`` the unit that line ``y`` is drawn from starts and ends (the blank
        line above a unit counts to it), as last drawn; no line: None."""
        if not 0 <= y < self.line_count:
            return None
        if y >= self._finished_lines:
            return self._frozen_end, len(self.source)
        index = bisect.bisect_right(self._tops, y) - 1
        start = self._starts[index]
        return start, start + len(self._blocks[index][0])

    def plain_at(self, y: int) -> bool:
        """Whether line ``y`` is drawn as plain text (its block was over budget)."""
        unit = self.unit_at(y)
        if unit is None:
            return False
        if y >= self._finished_lines:
            plain = self._in_plain
        else:
            plain = self._plain[bisect.bisect_right(self._tops, y) - 1]
        return plain or too_costly(self.source[unit[0]:unit[1]]) is not None

    def lines(self) -> list[list[Segment]]:
        """Every line as last drawn."""
        return [self.line(y) for y in range(self.line_count)]

    def draw(self, width: int, look: MarkdownLook) -> int:
        """Bring the lines up to date for ``width`` and ``look``, one step's worth (see ``pending``);
        returns how many lines there are."""
        if self._drawn_for != (width, look.key):
            self._drawn_for, self._look = (width, look.key), look
            self._restart()
        if not self._dirty:
            return self.line_count
        start, lines = self._frozen_end, self._finished_lines
        more = self._finished_lines < budget.SHOW_LINES and self._advance()
        while (more and self._frozen_end - start < budget.STEP_CHARS
               and self._finished_lines - lines < 4 * budget.STEP_LINES):
            more = self._finished_lines < budget.SHOW_LINES and self._advance()  # short units go several to a step
        if self._finished_lines >= budget.SHOW_LINES:  # the rest is counted, not drawn
            hidden = len(self.source) - self._frozen_end
            note = render_plain(budget.NOT_SHOWN.format(hidden), width) if hidden else []
            self._tail = [[]] + [[Segment(segment.text, _NOTE) for segment in line] for line in note] if note else []
            self._dirty = False
            self.drawn_length = len(self.source)
            return self.line_count
        tail = self.source[self._frozen_end:]
        if more or not tail.strip():
            self._tail = []
        elif self._in_plain:
            self._tail = render_plain(tail, width)
        else:
            self._tail = render_block(tail, width, look)
        if self._tail and self._finished_lines and not self._tail_joined:
            self._tail = [[]] + self._tail
        self._dirty = more
        self.drawn_length = self._frozen_end if more else len(self.source)
        return self.line_count

    def draw_all(self, width: int, look: MarkdownLook) -> int:
        """``draw`` until nothing is pending (copying the whole text needs all of it)."""
        count = self.draw(width, look)
        while self.pending:
            count = self.draw(width, look)
        return count

    def _advance(self) -> bool:
        """Move the finished blocks a step's worth of text holds out of the tail; True if more
        text than that is waiting."""
        source = self.source
        window = self._frozen_end + budget.STEP_CHARS + budget.PLAIN_CHARS + 1  # all a step can look at
        tail = source[self._frozen_end:window]  # not the whole rest: it may be megabytes
        last = window >= len(source)
        if self._in_plain:
            return self._advance_plain(tail, last)
        cut = line_end(tail, budget.STEP_CHARS, budget.STEP_LINES)
        whole = last and cut == len(tail)
        done, used, rest_joined = finished_blocks(tail[:cut], final=self.final and whole, joined=self._tail_joined)
        self._freeze(done, used, rest_joined, plain=False)
        if whole:
            return False
        if not done:  # one block fills the whole step: far over any budget, shown plain from its start
            start = len(tail) - len(tail.lstrip("\n"))
            self._frozen_end += start
            self._in_plain, self._fence = True, None
            return self._advance_plain(tail[start:], last)
        return True

    def _advance_plain(self, tail: str, last: bool) -> bool:
        size, ended, fence = plain_cut(tail, self._fence, final=self.final and last)
        if not size:
            return False
        self._freeze([(tail[:size], self._tail_joined)], size, not ended, plain=True)
        self._in_plain, self._fence = not ended, fence
        return size < len(tail) or not last

    def _freeze(self, done: list[tuple[str, bool]], used: int, rest_joined: bool, *, plain: bool) -> None:
        if not done:
            return
        start = self._frozen_end + used - sum(len(block) for block, _ in done)  # blank lines before are not in it
        for block, joined in done:
            self._add_finished(block, joined, plain, start)
            start += len(block)
        self._frozen_end += used
        self._tail_joined = rest_joined

    def _add_finished(self, block: str, joined: bool, plain: bool, start: int) -> None:
        index = len(self._blocks)
        self._blocks.append((block, joined))
        self._plain.append(plain)
        self._starts.append(start)
        self._tops.append(self._finished_lines)
        self._gaps.append(bool(self._finished_lines) and not joined)
        lines = self._block_lines(index)
        self._finished_lines += len(lines)

    def _block_lines(self, index: int) -> list[list[Segment]]:
        lines = self._kept.get(index)
        if lines is None:
            assert self._drawn_for is not None and self._look is not None
            source, width = self._blocks[index][0], self._drawn_for[0]
            drawn = render_plain(source, width) if self._plain[index] else render_block(source, width, self._look)
            lines = ([[]] if drawn and self._gaps[index] else []) + drawn
            self._kept[index] = lines
            if len(self._kept) > self.KEEP_DRAWN:
                self._kept.popitem(last=False)
        else:
            self._kept.move_to_end(index)
        return lines
