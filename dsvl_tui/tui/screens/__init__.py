"""The TUI's screens, one per private module: the main screen and the modal ones pushed over it."""

from dsvl_tui.tui.screens._dialog import Dialog
from dsvl_tui.tui.screens._find import FindScreen, found_prompt
from dsvl_tui.tui.screens._help import HelpScreen, binding_rows, docstring_keys, help_text, key_names
from dsvl_tui.tui.screens._main import MainScreen
from dsvl_tui.tui.screens._resume import ResumeScreen, preview_text

__all__ = ["Dialog", "FindScreen", "HelpScreen", "MainScreen", "ResumeScreen", "binding_rows", "docstring_keys",
           "help_text", "key_names", "found_prompt", "preview_text"]
