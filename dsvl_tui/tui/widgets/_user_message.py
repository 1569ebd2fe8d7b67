"""A user message: its attached images as previews, then its text (shown as typed)."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Label, Static

from dsvl_tui.core.conversation import ChatMessage
from dsvl_tui.core.text import printable
from dsvl_tui.tui.widgets._image_preview import ImagePreview


def role_line(role: str, versions: tuple[int, int]) -> str:
    """A message's header: who wrote it and, when /edit or /regenerate made others, which version it is."""
    k, n = versions
    return f"{role}  \u2039 {k}/{n} \u203a" if n > 1 else role


class VersionClicked(Message):
    """A click on the "‹ k/n ›" of ``message``'s header: ``step`` -1 (on the ‹) or 1 (elsewhere on it)."""

    def __init__(self, message: ChatMessage, step: int) -> None:
        super().__init__()
        self.message = message
        self.step = step


def clicked_version(widget: Widget, message: ChatMessage | None, versions: tuple[int, int],
                    event: events.Click) -> None:
    """Post ``VersionClicked`` for a click on the header of a message that has versions."""
    label = event.widget
    if message is None or versions[1] < 2 or not isinstance(label, Label) or not label.has_class("role"):
        return
    offset = event.get_content_offset(label)
    if offset is None:
        return
    text = str(label.render())
    arrow = text.find("\u2039")
    if arrow < 0 or offset.x < arrow:
        return  # on the name: not a step
    widget.post_message(VersionClicked(message, -1 if offset.x <= arrow + 1 else 1))
    event.stop()


class UserMessage(Vertical):
    """One message the user sent."""

    DEFAULT_CSS = """
    UserMessage {
        height: auto;
        padding: 0 1;
        margin: 0 0 1 0;
        border-left: thick $primary;
        background: $boost;
        & > .role {
            color: $primary;
            text-style: bold;
        }
        & > .images {
            height: auto;
            margin: 0 0 0 0;
        }
        & > .body {
            color: $foreground;
        }
    }
    """

    def __init__(self, message: ChatMessage, *, versions: tuple[int, int] = (1, 1), name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.message = message
        self.versions = versions  # (k, n): the message is version k of n (core.branches)

    def compose(self) -> ComposeResult:
        yield Label(role_line("You", self.versions), classes="role")
        if self.message.images:
            with Horizontal(classes="images"):
                for attachment in self.message.images:
                    yield ImagePreview(attachment)
        if self.message.text:
            yield Static(Content(printable(self.message.text)), classes="body")

    def on_click(self, event: events.Click) -> None:
        clicked_version(self, self.message, self.versions, event)
