"""Help as a modal screen: the keys (from the bindings and the input box's key table) and the commands.

Keys are written down once: a binding's description (its ``tooltip`` where it
has one, else the footer's word) and a widget's docstring key table are what
this screen lists; the commands come from the registry through ``/help``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from dsvl_tui.commands.session import HelpSection
from dsvl_tui.core.text import printable
from dsvl_tui.tui.screens._dialog import Dialog

_KEY_WORDS = {"ctrl": "Ctrl", "alt": "Alt", "shift": "Shift", "escape": "Esc", "pageup": "PgUp",
              "pagedown": "PgDn", "enter": "Enter", "tab": "Tab", "home": "Home", "end": "End",
              "up": "Up", "down": "Down", "left": "Left", "right": "Right", "space": "Space"}


def key_names(keys: str) -> str:
    """A binding's keys as a person writes them: ``"ctrl+pagedown,alt+right"`` -> ``"Ctrl+PgDn / Alt+Right"``."""
    def one(key: str) -> str:
        return "+".join(_KEY_WORDS.get(part, part.upper() if len(part) <= 3 else part.title())
                        for part in key.strip().split("+"))

    return " / ".join(one(key) for key in keys.split(","))


def binding_rows(bindings: Iterable[BindingType]) -> list[tuple[str, str]]:
    """(keys, what they do) for each binding that has a description."""
    rows = []
    for binding in bindings:
        if isinstance(binding, Binding) and (binding.tooltip or binding.description):
            rows.append((key_names(binding.key), binding.tooltip or binding.description.lower()))
    return rows


def docstring_keys(documented: type) -> list[tuple[str, str]]:
    """The rows of the ``| Key | Does |`` table in a class's docstring (how Textual documents keys)."""
    rows = []
    for line in (documented.__doc__ or "").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.strip().startswith("|") and len(cells) == 2 and cells[0] not in ("Key", "") \
                and not re.fullmatch(r"-+", cells[0]):
            rows.append((cells[0], cells[1]))
    return rows


def help_text(sections: Sequence[HelpSection], width: int = 34) -> str:
    """The sections as plain text: a title line, then one aligned line per row."""
    blocks = []
    for section in sections:
        column = min(max((len(key) for key, _ in section.rows), default=0), width)
        blocks.append("\n".join([section.title, *(f"  {key:<{column}}  {does}" for key, does in section.rows)]))
    return "\n\n".join(blocks)


def help_table(sections: Sequence[HelpSection], width: int = 34) -> Table:
    """The sections as a two-column grid: a description that wraps stays in its own column, never under the
    keys (at 80×24 and narrower the descriptions wrap); a key column of at most ``width`` cells."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=False, max_width=width)
    grid.add_column(ratio=1)
    for number, section in enumerate(sections):
        if number:
            grid.add_row("", "")
        grid.add_row(Text(printable(section.title), style="bold"), "")
        for key, does in section.rows:
            grid.add_row(Text("  " + printable(key)), Text(printable(does)))
    return grid


class HelpScreen(Dialog[None]):
    """The keys and the commands, over the main screen; Esc (or F1) closes it.

    | Key | Does |
    | --- | --- |
    | Esc, F1 | close |
    | Up / Down, PgUp / PgDn | scroll |
    """

    BINDINGS = [Binding("escape,f1", "dismiss", "Close")]

    DEFAULT_CSS = """
    HelpScreen {
        & VerticalScroll {
            height: 1fr;
        }
    }
    """

    def __init__(self, sections: Sequence[HelpSection]) -> None:
        super().__init__()
        self.sections = list(sections)
        self.text = help_text(self.sections)  # what is shown, as plain text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Help (Esc closes)", classes="title")
            with VerticalScroll():
                yield Static(help_table(self.sections), id="help-text")

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()
