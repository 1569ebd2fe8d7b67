"""A user message: its attached images as previews, then its text (shown as typed)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Label, Static

from dsvl_tui.core.conversation import ChatMessage
from dsvl_tui.core.text import printable
from dsvl_tui.tui.widgets._image_preview import ImagePreview


def role_line(role: str, versions: tuple[int, int]) -> str:
    """A message's header: who wrote it and, when /edit or /regenerate made others, which version it is."""
    k, n = versions
    return f"{role}  \u2039 {k}/{n} \u203a" if n > 1 else role


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
