"""A one-line notice or error in a conversation pane (not part of the conversation)."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from dsvl_tui.core.text import printable


class Notice(Static):
    """Output of a command (``-info``) or an error (``-error``), shown as plain text."""

    DEFAULT_CSS = """
    Notice {
        height: auto;
        padding: 0 1;
        margin: 0 0 1 0;
        color: $text-muted;
        &.-error {
            color: $text-error;
            background: $error-muted;
        }
    }
    """

    def __init__(self, text: str, *, error: bool = False, after: int | None = None) -> None:
        super().__init__(Content(printable(text)), classes="-error" if error else "-info")
        self.text = text
        self.is_error = error
        self.after = after
        """How many messages the conversation had when the command ran: the notice is shown after
        them (and an answer to the last), before later ones; ``None``: at the end, wherever that is."""
