"""The app's Textual themes and stylesheets (filled in by the TUI issue)."""

import pathlib

THEMES_DIR = pathlib.Path(__file__).parent
