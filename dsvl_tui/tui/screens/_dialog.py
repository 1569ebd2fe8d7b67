"""The frame every modal screen of the app shares: a bordered panel over the main screen, with a title line."""

from __future__ import annotations

from typing import TypeVar

from textual.screen import ModalScreen

ResultType = TypeVar("ResultType")


class Dialog(ModalScreen[ResultType]):
    """A modal screen whose ``compose`` yields one ``Vertical`` panel, its first line a ``Label.title``."""

    DEFAULT_CSS = """
    Dialog {
        align: center middle;
        & > Vertical {
            width: 90%;
            max-width: 110;
            height: 90%;
            border: round $primary;
            background: $surface;
            padding: 0 1;
        }
        & .title {
            width: 1fr;
            text-style: bold;
            color: $primary;
        }
    }
    """
