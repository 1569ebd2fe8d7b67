"""``/find``'s list as a modal screen: each conversation found with its title, date, pictures and the text
around the match (the match highlighted); Enter opens it at that message. Built as ``ResumeScreen`` is."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from dsvl_tui.commands.session import FoundConversation
from dsvl_tui.core.text import printable, shorten
from dsvl_tui.tui.screens._dialog import Dialog

TITLE_CELLS = 30  # of the title: at 80×24 the date and the picture count fit after it


def found_prompt(number: int, choice: FoundConversation) -> Table:
    """Two lines: "N. title  date, pictures", then the snippet with its matched words in bold (each line cut
    with an ellipsis, never wrapped). Everything from the index goes through ``printable`` again here."""
    grid = Table.grid(expand=True)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    title = shorten(printable(choice.title), TITLE_CELLS) or "untitled"
    grid.add_row(Text(f"{number:>2}. {title}  ").append(printable(choice.detail), "dim"))
    snippet = Text("    ")
    for text, matched in choice.hit.snippet:
        snippet.append(printable(text), "bold reverse" if matched else "")
    grid.add_row(snippet)
    return grid


class FindScreen(Dialog["FoundConversation | None"]):
    """What /find found: Up/Down move, Enter opens the conversation at the match, Esc closes.

    | Key | Does |
    | --- | --- |
    | Up / Down | move |
    | Enter | open the conversation at the message found |
    | Esc | close |
    """

    BINDINGS = [Binding("escape", "dismiss", "Close")]

    DEFAULT_CSS = """
    FindScreen {
        & OptionList {
            height: 1fr;
            min-height: 4;
        }
    }
    """

    def __init__(self, choices: Sequence[FoundConversation], query: str) -> None:
        super().__init__()
        self.choices = list(choices)
        self.query_text = query

    def compose(self) -> ComposeResult:
        found = f"{len(self.choices)} conversation{'s' if len(self.choices) != 1 else ''}"
        heading = f"Found {shorten(printable(self.query_text), 40)} in {found} (Enter opens, Esc closes)"
        with Vertical():
            yield Label(Text(heading), classes="title")
            yield OptionList(*(Option(found_prompt(n, c)) for n, c in enumerate(self.choices, 1)), id="found")

    def on_mount(self) -> None:
        choices = self.query_one(OptionList)
        choices.focus()
        if self.choices:
            choices.highlighted = 0

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.choices[event.option_index])
