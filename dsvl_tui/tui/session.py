"""The TUI's implementation of ``Session``: what slash commands may ask of the app.

Command handlers are plain functions run on the event loop; anything that
mounts or removes widgets is scheduled (in order) with ``call_later``, while
the state a handler may read back at once (the active conversation, the
input text) changes immediately.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from dsvl_tui.commands.registry import CommandError
from dsvl_tui.commands.session import FoundConversation, HelpSection, RecentConversation
from dsvl_tui.core.conversation import Conversation
from dsvl_tui.web.client import WebClient

T = TypeVar("T")

if TYPE_CHECKING:  # pragma: no cover
    from dsvl_tui.tui.app import DsvlApp
    from dsvl_tui.tui.compare import TuiCompare


class TuiSession:
    frontend = "tui"

    def __init__(self, app: DsvlApp) -> None:
        self.app = app
        # Under `dsvl-chat web`: uploads from the browser and downloads to it (/upload, /save, /export).
        self.web = WebClient.for_app(app)

    @property
    def conversation(self) -> Conversation:
        return self.app.active.conversation

    def info(self, message: str) -> None:
        self._notice(message, False)

    def error(self, message: str) -> None:
        self._notice(message, True)

    def _notice(self, message: str, error: bool) -> None:
        """Shown once the app gets to it, where the conversation stood now: input typed ahead (a
        question after this command) may be drawn first, and the notice still goes before it."""
        pane = self.app.active
        self.app.call_later(self.app.show_notice, message, error, pane, len(pane.conversation.messages))

    def send(self, text: str) -> None:
        self.app.send(text)

    def compare_host(self) -> TuiCompare:
        """``/compare``'s front end (``commands.builtin._compare.CompareHost``)."""
        return self.app.comparing

    def regenerate(self) -> None:
        self.app.regenerate()

    def is_generating(self) -> bool:
        return self.app.queue.for_pane(self.app.active) is not None

    def stop_generation(self) -> None:
        self.app.stop()

    def refresh(self) -> None:
        """Draw what changed: new messages are added, and only a conversation whose messages changed
        otherwise (/undo, /reset) is drawn afresh, so the notices of commands before it stay."""
        self.app.call_later(self.app.sync_pane, self.app.active)

    def open_conversation(self, conversation: Conversation) -> None:
        self.app.open_conversation(conversation)

    def read_then(self, read: Callable[[], T], then: Callable[[T], None]) -> None:
        self.app.read_then(read, then)

    def choose_conversation(self, choices: Sequence[RecentConversation],
                            open: Callable[[RecentConversation], None]) -> None:
        """A modal list of ``choices`` with a preview of the highlighted one; Enter opens it."""
        from dsvl_tui.tui.screens import ResumeScreen

        self.app.push_screen(ResumeScreen(choices), self._opening(open))

    def choose_found(self, found: Sequence[FoundConversation], open: Callable[[FoundConversation], None],
                     query: str) -> None:
        """A modal list of what /find found, with the text around each match; Enter opens one."""
        from dsvl_tui.tui.screens import FindScreen

        self.app.push_screen(FindScreen(found, query), self._opening(open))

    def _opening(self, open: Callable[[T], None]) -> Callable[[T | None], None]:
        """What a list screen calls with its choice: ``open`` it (nothing if it was closed), a refusal in one line."""
        def chosen(choice: T | None) -> None:
            if choice is None:
                return
            try:
                open(choice)
            except CommandError as exc:
                self.error(str(exc))

        return chosen

    def show_message(self, conversation: Conversation, index: int) -> None:
        """Scroll the pane showing ``conversation`` to message ``index`` once it is drawn (after the redraw
        ``open_conversation`` scheduled), its top at the top; the pane stops following the end."""
        def scroll() -> None:
            pane = next((p for p in self.app.tabs.panes if p.conversation is conversation), None)
            if pane is None or not 0 <= index < len(conversation.messages):
                return
            message = conversation.messages[index]
            widget = next((w for w in pane.children if getattr(w, "message", None) is message), None)
            if widget is not None:
                pane.release_anchor()
                pane.scroll_to_widget(widget, animate=False, top=True)

        self.app.call_later(lambda: self.app.call_after_refresh(scroll))

    def show_help(self, sections: Sequence[HelpSection]) -> None:
        """A modal with the keys (from the bindings and the input box's key table), then ``sections``."""
        from textual.binding import Binding

        from dsvl_tui.tui.screens import HelpScreen, binding_rows, docstring_keys
        from dsvl_tui.tui.widgets import PromptInput

        palette = self.app.COMMAND_PALETTE_BINDING
        keys = [*binding_rows(self.app.main.key_bindings), *docstring_keys(PromptInput),
                *binding_rows([Binding(palette, "command_palette", "command palette (every slash command)")])]
        self.app.push_screen(HelpScreen([HelpSection("Keys", tuple(keys)), *sections]))

    def new_pane(self) -> None:
        self.app.new_pane()

    def close_pane(self) -> None:
        self.app.close_pane()

    def switch_pane(self, offset: int) -> None:
        self.app.step_pane(offset)

    def model_server(self) -> object | None:
        """The server that chooses the model (``--endpoint``), or None (``DsvlApp.model_server``)."""
        return self.app.model_server()

    def change_model(self, model: str) -> None:
        self.app.load_model(model)

    def set_theme(self, name: str) -> None:
        if name not in self.app.available_themes:
            import themes

            raise ValueError(themes.unknown_theme(name))
        self.app.theme = name

    def theme_name(self) -> str | None:
        return self.app.theme

    def set_input(self, text: str) -> None:
        self.app.prompt.load_text_at_end(text)
        self.app.prompt.focus()

    def copy_text(self, text: str) -> None:
        # Raises ClipboardError (a ValueError) when too long for a terminal, or inside tmux when nothing gets through.
        self.app.put_on_clipboard(text)

    def quit(self) -> None:
        self.app.call_later(self.app.action_quit)
