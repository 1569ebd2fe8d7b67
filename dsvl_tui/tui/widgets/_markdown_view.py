"""Markdown shown as one widget of pre-drawn lines, cheap to grow one token at a time.

Textual's ``Markdown`` widget mounts a widget per block (and per list item,
table cell, ...): a long answer becomes thousands of widgets, and every
frame's layout walks all of them, so streaming slows down as the answer
grows. ``MarkdownView`` is a single line-API widget instead, over a
``DrawnMarkdown`` (finished blocks drawn once, the last one again as text
comes). It draws when Textual asks for its height during layout, so many
chunks between two frames cost one drawing. A width or theme change
redraws everything once.
"""

from __future__ import annotations

from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

from dsvl_tui.markdown import DrawnMarkdown, MarkdownLook, look_for


class MarkdownView(Widget):
    """Markdown source drawn block by block; ``append`` text as it streams."""

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
        return self._drawn.draw(width, self._look())

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        self._drawn.draw(width, self._look())
        return Strip(self._drawn.line(y)).crop_extend(0, width, None).apply_style(self.rich_style)
