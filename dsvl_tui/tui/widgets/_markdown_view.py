"""Markdown shown as one widget of pre-drawn lines, cheap to grow one token at a time.

Textual's ``Markdown`` widget mounts a widget per block (and per list item,
table cell, ...): a long answer becomes thousands of widgets, and every
frame's layout walks all of them, so streaming slows down as the answer
grows. ``MarkdownView`` is a single line-API widget instead, over a
``DrawnMarkdown`` (finished blocks drawn once, the last one again as text
comes). It draws when Textual asks for its height during layout, so many
chunks between two frames cost one drawing. A width or theme change
redraws everything, a step at a time (see ``DrawnMarkdown``): a text too
big to draw in one frame is drawn over several, and keys are read between
them.

Each line it hands out carries its selection offsets (the character and
line in each segment's style), so Textual's text selection works in it: a
mouse drag selects what is drawn, the selection is highlighted, and the
screen's copy key (Ctrl+C) copies it through ``App.copy_to_clipboard``. A
click on a code block copies that block's code.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.geometry import Size
from textual.selection import Selection
from textual.strip import Strip
from textual.widget import Widget

from dsvl_tui.markdown.render import DrawnMarkdown, MarkdownLook, code_blocks, is_code_block, look_for


class MarkdownView(Widget):
    """Markdown source drawn block by block; ``append`` text as it streams."""

    KEEP_STRIPS = 128
    """Finished lines kept ready to show (a screenful or two)."""

    DEFAULT_CSS = """
    MarkdownView {
        height: auto;
    }
    """

    def __init__(self, source: str = "", *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._drawn = DrawnMarkdown(source)
        self._look_now: MarkdownLook | None = None
        # y -> (the drawn line, what else it was made for, the strip): a finished block's lines stay
        # the same objects from frame to frame, so while an answer streams only its last block is made again.
        self._strips: dict[int, tuple[list[Segment], tuple, Strip]] = {}

    @property
    def source(self) -> str:
        return self._drawn.source

    @property
    def drawn_length(self) -> int:
        """How much of ``source`` is drawn (all of it once a frame has been laid out)."""
        return self._drawn.drawn_length

    def on_mount(self) -> None:
        self.watch(self.app, "theme", self._theme_changed, init=False)

    def _theme_changed(self) -> None:
        self._look_now = None
        self.refresh(layout=True)

    def append(self, text: str) -> None:
        """Add streamed text; more may follow until ``finish``."""
        self._drawn.append(text)
        self.refresh(layout=True)

    def update(self, source: str) -> None:
        """Show ``source`` instead, as a finished text."""
        self._drawn = DrawnMarkdown(source)
        self.refresh(layout=True)

    def finish(self) -> None:
        """No more text: the last block is final too."""
        self._drawn.finish()
        self.refresh(layout=True)

    def _look(self) -> MarkdownLook:
        # The app builds its variables afresh when asked: once per theme is enough.
        if self._look_now is None:
            self._look_now = look_for(self.app.get_css_variables(), dark=self.app.current_theme.dark)
        return self._look_now

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        count = self._drawn.draw(width, self._look())
        if self._drawn.pending:  # a step's worth drawn: the rest on the next frames, keys read in between
            self.call_after_refresh(self.refresh, layout=True)
        return count

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if not self._drawn.drawn_at(width, self._look()):  # drawn during layout; only a stray call gets here first
            self.get_content_height(self.size, self.size, width)
        line = self._drawn.line(y)
        selection = self.text_selection
        span = selection.get_span(y) if selection is not None else None
        made_for = (width, span, self.rich_style)
        cached = self._strips.get(y)
        if cached is not None and cached[0] is line and cached[1] == made_for:
            return cached[2]
        strip = Strip(line).crop_extend(0, width, None)
        if span is not None:
            strip = Strip(_highlight(strip, *span, self._selection_style()), strip.cell_length)
        # Offsets (character, line) in each segment's style: what the screen reads to select with the mouse.
        # Neighbours of one style are joined first: they would no longer be once their offsets differ.
        strip = strip.apply_style(self.rich_style).simplify().apply_offsets(0, y)
        if len(self._strips) >= self.KEEP_STRIPS:
            self._strips.clear()
        self._strips[y] = (line, made_for, strip)
        return strip

    # -- selection and copying ---------------------------------------------------------------

    def _selection_style(self) -> Style:
        style = self.screen.get_component_rich_style("screen--selection")
        # "transparent": the text keeps its colour
        if self.screen.get_component_styles("screen--selection").color.a == 0:
            style = Style(bgcolor=style.bgcolor)
        return style

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        """The selected part of what is drawn, as text (each line without its trailing blanks)."""
        self._drawn.draw_all(self.size.width, self._look())
        lines = ["".join(segment.text for segment in line).rstrip() for line in self._drawn.lines()]
        return "\n".join(_extract(lines, selection)), "\n"

    def code_block_at(self, y: int) -> tuple[int, str] | None:
        """The code block drawn on line ``y``: its number in the text (1 = first) and its code."""
        unit = self._drawn.unit_at(y) if self._drawn.line(y) else None  # the blank line between blocks: none
        if unit is None or self._drawn.plain_at(y):  # plain text has no code block to copy (nor a cheap parse)
            return None
        start, end = unit
        source = self._drawn.source
        inside = code_blocks(source[start:end])
        if not inside:
            return None
        if is_code_block(source[start:end]):
            index = 0
        else:  # a list item with text and code: the code block holding the line clicked
            shown = "".join(segment.text for segment in self._drawn.line(y)).strip()
            index = next((i for i, code in enumerate(inside)
                          if shown and any(shown in line.expandtabs(4) for line in code.splitlines())), -1)
            if index < 0:
                return None
        return len(code_blocks(source[:start])) + index + 1, inside[index]

    def on_click(self, event: events.Click) -> None:
        """A click on a code block copies it (a drag selects instead)."""
        if event.chain != 1 or self.screen.selections:
            return
        found = self.code_block_at(event.y)
        if found is not None:
            event.stop()
            self.app.copy_to_clipboard(found[1])


def _highlight(segments: Iterable[Segment], start: int, end: int, style: Style) -> list[Segment]:
    """``segments`` with ``style`` over characters ``start`` to ``end`` (-1: to the end)."""
    result: list[Segment] = []
    x = 0
    for segment in segments:
        text, base, control = segment
        a, b = max(start - x, 0), len(text) if end == -1 else min(end - x, len(text))
        x += len(text)
        if control or a >= b:
            result.append(segment)
            continue
        if a:
            result.append(Segment(text[:a], base))
        result.append(Segment(text[a:b], base + style if base else style))
        if b < len(text):
            result.append(Segment(text[b:], base))
    return result


def _extract(lines: list[str], selection: Selection) -> list[str]:
    """The selected part of ``lines`` (``Selection.extract`` on a list: a line of the text may hold
    a character that ``str.splitlines`` would split at)."""
    picked: list[str] = []
    for y, line in enumerate(lines):
        span = selection.get_span(y)
        if span is not None:
            start, end = span
            picked.append(line[start:] if end == -1 else line[start:end])
    return [line.rstrip() for line in picked]
