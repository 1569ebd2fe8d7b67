"""An assistant answer: streamed as markdown, then finished with a marker line.

The text lives in one ``MarkdownView``: chunks go through ``write()``, which
appends them; the view draws each finished block once and redraws only the
last one, once per frame, so the cost of a chunk does not grow with the
length of the answer. ``finish()`` marks the last block final.
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Label

from dsvl_tui.core.conversation import ChatMessage
from dsvl_tui.core.stats import stats_line
from dsvl_tui.core.text import printable
from dsvl_tui.tui.widgets._markdown_view import MarkdownView
from dsvl_tui.tui.widgets._user_message import clicked_version, role_line
from engine.types import GenerationStats


class AssistantMessage(Vertical):
    """The model's answer to one user message."""

    DEFAULT_CSS = """
    AssistantMessage {
        height: auto;
        padding: 0 1;
        margin: 0 0 1 0;
        border-left: thick $accent;
        & > .role {
            color: $accent;
            text-style: bold;
        }
        & > MarkdownView {
            margin: 0;
            padding: 0;
        }
        & > .marker {
            color: $text-muted;
            display: none;
        }
        &.-marked > .marker {
            display: block;
        }
        &.-waiting > .marker { color: $text-warning; }
        &.-stopped > .marker { color: $text-warning; }
        &.-error > .marker { color: $text-error; }
        &.-empty > MarkdownView { display: none; }
    }
    """

    state: reactive[str] = reactive("waiting")
    """waiting, streaming, done, stopped or error."""

    def __init__(self, message: ChatMessage | None = None, *, versions: tuple[int, int] = (1, 1),
                 name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.message = message
        self.versions = versions  # (k, n): the answer is version k of n (core.branches)
        self._parts: list[str] = []
        self._marker = "waiting for its turn"
        if message is not None:
            self._parts = [printable(message.text)]
            state = "error" if message.error else "stopped" if message.stopped else "done"
            self.set_reactive(AssistantMessage.state, state)
            self._marker = printable(self._final_marker(message.stats, message.stopped, message.error))
        self._view = MarkdownView("".join(self._parts))

    def compose(self) -> ComposeResult:
        yield Label(role_line("DeepSeek-VL", self.versions), classes="role")
        yield self._view
        yield Label(Content(self._marker), classes="marker")

    def on_mount(self) -> None:
        self._apply_state()

    def on_click(self, event: events.Click) -> None:
        clicked_version(self, self.message, self.versions, event)

    def watch_state(self) -> None:
        if self.is_mounted:
            self._apply_state()

    def _apply_state(self) -> None:
        self.set_class(self.state == "waiting", "-waiting")
        self.set_class(self.state == "done", "-done")
        self.set_class(self.state == "stopped", "-stopped")
        self.set_class(self.state == "error", "-error")
        self.set_class(not self.text, "-empty")
        self.set_class(bool(self._marker) and self.state != "streaming", "-marked")

    @property
    def text(self) -> str:
        """What the answer shows so far (control characters removed)."""
        return "".join(self._parts)

    @property
    def markdown(self) -> MarkdownView:
        return self._view

    def set_marker(self, text: str) -> None:
        self._marker = printable(text)
        if self.is_mounted:
            self.query_one(".marker", Label).update(Content(self._marker))
            self._apply_state()

    def wait(self, reason: str) -> None:
        """Show why the answer has not started yet."""
        self.state = "waiting"
        self.set_marker(reason)

    async def write(self, chunk: str) -> None:
        """Append streamed text (made printable)."""
        chunk = printable(chunk)
        if not chunk:
            return
        if self.state != "streaming":
            self.state = "streaming"
        self._parts.append(chunk)
        self.set_class(False, "-empty")
        self.markdown.append(chunk)

    async def finish(self, stats: GenerationStats | None = None, *, stopped: bool = False,
                     error: str | None = None) -> None:
        """End the answer: its last block is final; show the marker."""
        self._parts = ["".join(self._parts)] if self._parts else []
        self.markdown.finish()
        self.set_marker(self._final_marker(stats, stopped, error))
        self.state = "error" if error else "stopped" if stopped else "done"
        self._apply_state()

    @staticmethod
    def _final_marker(stats: GenerationStats | None, stopped: bool, error: str | None) -> str:
        if error:
            return f"error: {error}"
        line = stats_line(stats, "pane")
        if stopped:
            return "stopped" + (f" \u00b7 {line}" if line else "")
        return line
