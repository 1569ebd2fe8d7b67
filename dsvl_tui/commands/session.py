"""What slash commands may ask of a front end.

The Textual app and the plain REPL each implement ``Session``; the one
command registry (``dsvl_tui.commands.registry``) is written against it, so both
front ends (and the command palette) run the very same commands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from dsvl_tui.core.conversation import Conversation

if TYPE_CHECKING:  # pragma: no cover
    from dsvl_tui.storage.journal import JournalEntry
    from dsvl_tui.storage.search_index import Hit

T = TypeVar("T")


@dataclass(frozen=True)
class RecentConversation:
    """One journaled conversation as ``/resume`` offers it."""

    entry: JournalEntry
    title: str
    detail: str  # "4 messages, 2 hours ago"


@dataclass(frozen=True)
class FoundConversation:
    """One conversation ``/find`` found: its title, "2026-05-01 14:03, 2 pictures", and the snippet around the
    match (``hit.snippet``: printable (text, matched) pieces)."""

    hit: Hit
    title: str
    detail: str


@dataclass(frozen=True)
class HelpSection:
    """A titled list for ``/help``: (what to type or press, what it does)."""

    title: str
    rows: tuple[tuple[str, str], ...]


class Session(Protocol):
    #: "tui" or "repl": commands that make no sense in a front end are hidden there.
    frontend: str

    @property
    def conversation(self) -> Conversation:
        """The conversation of the active pane."""

    def info(self, message: str) -> None:
        """Show a one-line notice."""

    def error(self, message: str) -> None:
        """Show a one-line error; nothing else happens."""

    def send(self, text: str) -> None:
        """Add ``text`` as the user's message (with pending images) and start the answer."""

    def regenerate(self) -> None:
        """Answer the last user message again (the conversation was already trimmed)."""

    def is_generating(self) -> bool:
        ...

    def stop_generation(self) -> None:
        """Stop the answer being generated; what was produced stays, marked as stopped."""

    def refresh(self) -> None:
        """Redraw the active conversation after a command changed it."""

    def open_conversation(self, conversation: Conversation) -> None:
        """Show ``conversation`` in a new pane (or the active one if it is empty)."""

    def read_then(self, read: Callable[[], T], then: Callable[[T], None]) -> None:
        """Run ``read`` (file work of unbounded length: a transcript, the journal) where it cannot freeze
        the screen, then ``then(result)`` on the front end's own thread. A ``CommandError`` raised by
        either is shown as an error line."""

    def choose_conversation(self, choices: Sequence[RecentConversation],
                            open: Callable[[RecentConversation], None]) -> None:
        """Offer ``choices`` (newest first) to pick from; ``open(choice)`` opens the one picked. The TUI
        shows a list with a preview; the REPL prints them numbered, for ``/resume N``."""

    def choose_found(self, found: Sequence[FoundConversation], open: Callable[[FoundConversation], None],
                     query: str) -> None:
        """Offer what ``/find query`` found (best first); ``open(choice)`` opens the one picked. The TUI shows
        a list with the snippets, Enter opens; the REPL prints them numbered, for ``/find --open N query``."""

    def show_message(self, conversation: Conversation, index: int) -> None:
        """Bring message ``index`` of ``conversation`` (just opened) into view: the TUI scrolls its pane to it,
        the REPL prints it."""

    def show_help(self, sections: Sequence[HelpSection]) -> None:
        """Show ``sections`` (the commands) with the front end's own keys."""

    def new_pane(self) -> None:
        ...

    def close_pane(self) -> None:
        ...

    def change_model(self, model: str) -> None:
        """Load another model in the background; the current one stays until it is ready."""

    def set_theme(self, name: str) -> None:
        """Switch theme (raises ``ValueError`` for an unknown name)."""

    def theme_name(self) -> str | None:
        """The current theme (None where the front end has no themes)."""

    def set_input(self, text: str) -> None:
        """Put ``text`` in the input box (for ``/edit``)."""

    def copy_text(self, text: str) -> None:
        """Copy to the user's clipboard (``tui.clipboard.copy``: OSC 52, through tmux inside it); raises
        ``ValueError`` with one line when nothing can reach the clipboard (too long, or tmux lets nothing through)."""

    def quit(self) -> None:
        ...
