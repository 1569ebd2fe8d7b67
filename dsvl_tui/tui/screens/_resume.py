"""``/resume``'s list as a modal screen: recent conversations, and a preview of the highlighted one.

The preview (the first and last messages) is read from the journal entry in
a thread worker, so a large entry never stalls the screen; only the latest
highlighted entry's preview is shown.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option

from dsvl_tui.commands.session import RecentConversation
from dsvl_tui.core.text import printable
from dsvl_tui.tui.screens._dialog import Dialog

PREVIEW_CHARS = 400  # of each message shown


def _clip(text: str, limit: int = PREVIEW_CHARS) -> str:
    text = " ".join(printable(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def preview_text(choice: RecentConversation) -> str:
    """The first message and the last (with how many lie between) of a journal entry; reads the file."""
    from dsvl_tui.storage.transcript.format import TranscriptError
    from dsvl_tui.storage.transcript.read import read

    try:
        conversation, _, _ = read(choice.entry.path, trusted=True)
    except TranscriptError as error:
        return f"cannot preview: {error}"
    messages = conversation.messages
    if not messages:
        return "(no messages)"
    names = {"user": "You", "assistant": "DeepSeek-VL"}
    shown = [messages[0]] if len(messages) == 1 else [messages[0], messages[-1]]
    parts = [f"{names.get(m.role, m.role)}: {_clip(m.text)}" for m in shown]
    between = len(messages) - len(shown)
    if between:
        parts.insert(1, f"\u2026 {between} message{'s' if between != 1 else ''} between \u2026")
    return "\n\n".join(parts)


TITLE_CELLS = 40  # of the title in an entry's line: what is left of the line goes to the detail


def choice_prompt(number: int, choice: RecentConversation) -> Table:
    """One entry of the list, on one line so that eight or more fit at 80×24: its number (as ``/resume N``
    takes it), its title (cut at a word before ``TITLE_CELLS``, with an ellipsis), then what tells it apart (messages,
    time, first image); a line too long for the list ends in an ellipsis rather than wrapping."""
    title = printable(choice.title)
    if len(title) > TITLE_CELLS:  # cut at a word where there is one
        cut = title[: TITLE_CELLS - 1]
        title = (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip() + "\u2026"
    grid = Table.grid(expand=True)  # a one-column grid: the option list would wrap a bare Text
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_row(Text(f"{number:>2}. {title}  ").append(printable(choice.detail), "dim"))
    return grid


class ResumeScreen(Dialog["RecentConversation | None"]):
    """Pick a recent conversation: Up/Down move (the preview follows), Enter opens it, Esc closes.

    | Key | Does |
    | --- | --- |
    | Up / Down | move |
    | Enter | open the conversation in a tab |
    | Esc | close |
    """

    BINDINGS = [Binding("escape", "dismiss", "Close")]

    DEFAULT_CSS = """
    ResumeScreen {
        & OptionList {
            height: 2fr;
            min-height: 3;
        }
        & #preview {
            height: 1fr;
            border-top: solid $primary 50%;
            color: $text-muted;
            overflow-y: auto;
        }
    }
    """

    def __init__(self, choices: Sequence[RecentConversation]) -> None:
        super().__init__()
        self.choices = list(choices)
        self.previewed: RecentConversation | None = None  # whose preview is shown

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Recent conversations (Enter opens, Esc closes)", classes="title")
            yield OptionList(*(Option(choice_prompt(n, c)) for n, c in enumerate(self.choices, 1)), id="choices")
            yield Static("", id="preview")

    def on_mount(self) -> None:
        choices = self.query_one(OptionList)
        choices.focus()
        if self.choices:
            choices.highlighted = 0

    @property
    def preview(self) -> str:
        """The preview's text as shown."""
        return str(self.query_one("#preview", Static).content)

    @on(OptionList.OptionHighlighted)
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._read_preview(self.choices[event.option_index])

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.choices[event.option_index])

    @work(thread=True, exclusive=True, group="resume-preview", exit_on_error=False)
    def _read_preview(self, choice: RecentConversation) -> None:
        text = preview_text(choice)
        self.app.call_from_thread(self._show_preview, choice, text)

    def _show_preview(self, choice: RecentConversation, text: str) -> None:
        if self.is_attached and self.query_one(OptionList).highlighted == self.choices.index(choice):
            self.previewed = choice
            self.query_one("#preview", Static).update(Content(text))
