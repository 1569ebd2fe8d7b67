"""The main screen: the conversation tabs, the input box, the status bar and the footer, with their keys.

The screen owns the keys that act on the conversations; they are inactive
while a modal screen (the palette, help, ``/resume``'s list) is on top. The
app owns what is app-wide (the model, the answer queue, autosave, Ctrl+Q).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingsMap
from textual.screen import Screen
from textual.widgets import Footer, Input, TextArea

from dsvl_tui.commands import builtin as builtin_commands
from dsvl_tui.tui.widgets import ConversationTabs, PromptInput, StatusBar, VersionClicked

if TYPE_CHECKING:  # pragma: no cover
    from dsvl_tui.tui.app import DsvlApp


# Versions of a message (/edit, /regenerate keep the old one as a branch): up and down, as a browser and a
# terminal both pass Alt+Up/Down on (Alt+Left/Right are the tabs'; Ctrl+Left/Right move by words in the input).
BRANCH_KEYS = [
    Binding("alt+up", "slash('/branch prev')", "Previous version", show=False,
            tooltip="the previous version of the last message with versions (/branch prev)"),
    Binding("alt+down", "slash('/branch next')", "Next version", show=False,
            tooltip="the next version of the last message with versions (/branch next)"),
]

# What a browser lets through: it keeps Ctrl+N, Ctrl+W and Ctrl+Q (and Ctrl+PgUp/PgDn, its tabs) before a page
# sees them, so the same actions get Alt keys there. The Ctrl keys stay bound (a kiosk browser may pass them on)
# but are not offered.
WEB_KEYS = [
    Binding("alt+q", "app.quit", "Quit", priority=True, tooltip="quit (conversations are autosaved)"),
    Binding("escape", "stop", "Stop", tooltip="stop the answer (what was written stays, marked stopped)"),
    # Priority: a browser's terminal sends Alt+N as ESC n, which Textual reads as a printable "alt+n" (character
    # "n") that the input box would take as a letter before a non-priority binding is looked at.
    Binding("alt+n", "new_pane", "New", priority=True, tooltip="new tab"),
    Binding("alt+w", "close_pane", "Close", priority=True, tooltip="close the tab (it stays in /resume)"),
    Binding("alt+right", "next_pane", "Next tab", show=False, priority=True),
    Binding("alt+left", "previous_pane", "Previous tab", show=False, priority=True),
    Binding("ctrl+o", "attach", "Image", tooltip="start /image to attach a picture"),
    Binding("ctrl+r", "slash('/regenerate')", "Regenerate", show=False, tooltip="regenerate the last answer"),
    *BRANCH_KEYS,
    Binding("f1", "slash('/help')", "Help", tooltip="this help"),
    Binding("ctrl+n", "new_pane", show=False),  # no description: not listed by F1 either
    Binding("ctrl+w", "close_pane", show=False, priority=True),
    Binding("ctrl+pagedown", "next_pane", show=False),
    Binding("ctrl+pageup", "previous_pane", show=False),
]


class MainScreen(Screen[None]):
    """Where the user chats: one tab per conversation, the input box below, the status bar under it.

    | Key | Does |
    | --- | --- |
    | Esc | stop the answer |
    | Ctrl+N / Ctrl+W | new tab / close tab |
    | Alt+Right / Alt+Left (Ctrl+PgDn / Ctrl+PgUp) | next / previous tab |
    | Ctrl+O | start `/image ` |
    | Ctrl+R | regenerate the last answer |
    | Alt+Up / Alt+Down | previous / next version of a message (`/branch prev`, `/branch next`) |
    | F1 | help |
    | Ctrl+Q | quit |

    In a browser (``dsvl-chat web``) the keys are ``WEB_KEYS``: Alt+N, Alt+W and Alt+Q stand in for
    Ctrl+N, Ctrl+W and Ctrl+Q, which the browser keeps for itself (new window, close tab, quit).
    """

    BINDINGS = [
        # Ctrl+Q quits on every screen (Textual's App binds it); here to be shown, first as the footer has it.
        Binding("ctrl+q", "app.quit", "Quit", priority=True, tooltip="quit (conversations are autosaved)"),
        Binding("escape", "stop", "Stop", tooltip="stop the answer (what was written stays, marked stopped)"),
        Binding("ctrl+n", "new_pane", "New", tooltip="new tab"),
        Binding("ctrl+w", "close_pane", "Close", priority=True, tooltip="close the tab (it stays in /resume)"),
        Binding("ctrl+pagedown,alt+right", "next_pane", "Next tab", show=False),
        Binding("ctrl+pageup,alt+left", "previous_pane", "Previous tab", show=False),
        Binding("ctrl+o", "attach", "Image", tooltip="start /image to attach a picture"),
        Binding("ctrl+r", "slash('/regenerate')", "Regenerate", show=False, tooltip="regenerate the last answer"),
        *BRANCH_KEYS,
        Binding("f1", "slash('/help')", "Help", tooltip="this help"),
    ]

    def on_mount(self) -> None:
        if self.chat.in_browser:  # the footer offers, and help lists, keys that reach the app
            self._bindings = BindingsMap(WEB_KEYS)
            self.refresh_bindings()

    @property
    def key_bindings(self) -> list[Binding]:
        """The keys this screen has where it runs: ``BINDINGS`` in a terminal, ``WEB_KEYS`` in a browser."""
        return WEB_KEYS if self.chat.in_browser else list(self.BINDINGS)  # type: ignore[arg-type]

    def compose(self) -> ComposeResult:
        chat = self.chat
        yield ConversationTabs(chat.new_conversation(), id="tabs")
        prompt = PromptInput(id="prompt")
        prompt.path_suffixes, prompt.argument_choices = builtin_commands.PATH_SUFFIXES, chat.argument_choices
        prompt.remember = chat.prompt_history.append
        yield prompt
        yield StatusBar(id="status")
        yield Footer()

    def on_key(self, event: events.Key) -> None:
        """A printable key that nothing else took, pressed away from the input (the conversation has the
        focus after a mouse selection, say), goes to the input instead of nowhere."""
        if not event.is_printable or not event.character or isinstance(self.focused, (Input, TextArea)) \
                or event.key.startswith(("alt+", "ctrl+")):  # ESC n arrives as a printable "alt+n": not a letter
            return
        prompt = self.query_one("#prompt", PromptInput)
        prompt.focus()
        prompt.move_cursor(prompt.document.end)
        prompt.insert(event.character)
        event.stop()

    @property
    def chat(self) -> DsvlApp:
        return cast("DsvlApp", self.app)

    def action_stop(self) -> None:
        self.chat.stop()

    def action_new_pane(self) -> None:
        self.chat.new_pane()

    def action_close_pane(self) -> None:
        self.chat.close_pane()

    def action_next_pane(self) -> None:
        self.chat.step_pane(+1)

    def action_previous_pane(self) -> None:
        self.chat.step_pane(-1)

    def action_attach(self) -> None:
        self.chat.session.set_input("/image ")

    def action_slash(self, line: str) -> None:
        self.chat.run_command(line)

    def on_version_clicked(self, event: VersionClicked) -> None:
        """A click on a message's "‹ k/n ›": its previous or next version, as Alt+Up / Alt+Down would."""
        from dsvl_tui.core.branches import focus_on

        if focus_on(self.chat.active.conversation, event.message):
            self.chat.run_command("/branch next" if event.step > 0 else "/branch prev")
