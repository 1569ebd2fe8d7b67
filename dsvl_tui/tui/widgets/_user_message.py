"""A user message: its attached images as previews, then its text (shown as typed)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Label, Static

from dsvl_tui.core.conversation import ChatMessage
from dsvl_tui.core.text import printable
from dsvl_tui.tui.widgets._image_preview import ImagePreview


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

    def __init__(self, message: ChatMessage, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.message = message

    def compose(self) -> ComposeResult:
        yield Label("You", classes="role")
        if self.message.images:
            with Horizontal(classes="images"):
                for attachment in self.message.images:
                    yield ImagePreview(attachment)
        if self.message.text:
            yield Static(Content(printable(self.message.text)), classes="body")
