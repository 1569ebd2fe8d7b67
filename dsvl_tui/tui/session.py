"""The TUI's implementation of ``Session``: what slash commands may ask of the app.

Command handlers are plain functions run on the event loop; anything that
mounts or removes widgets is scheduled (in order) with ``call_later``, while
the state a handler may read back at once (the active conversation, the
input text) changes immediately.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from dsvl_tui.conversation import Conversation
from dsvl_tui.tui.clipboard import osc52

T = TypeVar("T")

if TYPE_CHECKING:  # pragma: no cover
    from dsvl_tui.tui.app import DsvlApp


KEY_HELP = """keys: Enter send · Ctrl+J new line (Shift+Enter, Alt+Enter where the terminal reports them)
Up/Down earlier prompts · Tab or Right complete · PgUp/PgDn scroll · Esc stop the answer
Ctrl+N new tab · Ctrl+W close tab · Alt+Right/Left (Ctrl+PgDn/PgUp) next/previous tab
Ctrl+O attach an image · Ctrl+R regenerate · Ctrl+P palette · F1 help · Ctrl+Q quit"""


class TuiSession:
    frontend = "tui"

    def __init__(self, app: DsvlApp) -> None:
        self.app = app

    @property
    def conversation(self) -> Conversation:
        return self.app.active.conversation

    def info(self, message: str) -> None:
        self.app.call_later(self.app.show_notice, message, False)

    def error(self, message: str) -> None:
        self.app.call_later(self.app.show_notice, message, True)

    def send(self, text: str) -> None:
        self.app.send(text)

    def regenerate(self) -> None:
        self.app.regenerate()

    def is_generating(self) -> bool:
        return self.app.queue.for_pane(self.app.active) is not None

    def stop_generation(self) -> None:
        self.app.action_stop()

    def refresh(self) -> None:
        self.app.call_later(self.app.sync_pane, self.app.active, True)

    def open_conversation(self, conversation: Conversation) -> None:
        self.app.open_conversation(conversation)

    def read_then(self, read: Callable[[], T], then: Callable[[T], None]) -> None:
        self.app.read_then(read, then)

    def new_pane(self) -> None:
        self.app.action_new_pane()

    def close_pane(self) -> None:
        self.app.action_close_pane()

    def switch_pane(self, offset: int) -> None:
        self.app.tabs.step(offset)

    @property
    def key_help(self) -> str:
        """The app's keys, for ``/help``."""
        return KEY_HELP

    def change_model(self, model: str) -> None:
        self.app.load_model(model)

    def set_theme(self, name: str) -> None:
        if name not in self.app.available_themes:
            import themes

            raise ValueError(themes.unknown_theme(name))
        self.app.theme = name

    def set_input(self, text: str) -> None:
        self.app.prompt.load_text_at_end(text)
        self.app.prompt.focus()

    def copy_text(self, text: str) -> None:
        osc52(text)  # raises ClipboardError (a ValueError) when too long for a terminal
        self.app.copy_to_clipboard(text)

    def quit(self) -> None:
        self.app.call_later(self.app.action_quit)
