"""The app's Textual themes, as data.

Themes are data: each ``*.json`` file in this folder describes one
``textual.theme.Theme`` (its fields by name). ``load_themes()`` reads and
validates them; the app registers them beside Textual's built-in themes.
The app's layout stylesheet lives beside the app (``dsvl_tui/tui/app.tcss``).

Importing this package imports nothing from Textual.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import TYPE_CHECKING

from engine.files import read_regular

if TYPE_CHECKING:  # pragma: no cover
    from textual.theme import Theme

THEMES_DIR = pathlib.Path(__file__).parent
DEFAULT_THEME = "dsvl-night"
MAX_THEME_BYTES = 1 << 20  # a theme is a few hundred bytes

_COLOUR_FIELDS = (
    "primary", "secondary", "warning", "error", "success", "accent",
    "foreground", "background", "surface", "panel", "boost",
)


class ThemeFileError(ValueError):
    """A theme file that is not a valid theme; ``str()`` names the file and the problem."""


def theme_from_data(data: object, source: str = "<data>") -> Theme:
    """Validate a mapping into a ``Theme``: known fields only, colours that parse."""
    from textual.color import Color, ColorParseError
    from textual.theme import Theme

    if not isinstance(data, dict):
        raise ThemeFileError(f"{source}: a theme is a JSON object")
    known = {f.name for f in dataclasses.fields(Theme)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ThemeFileError(f"{source}: unknown theme field(s) {', '.join(unknown)}")
    for key in ("name", "primary"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ThemeFileError(f"{source}: '{key}' is required")
    for key in _COLOUR_FIELDS:
        value = data.get(key)
        if value is None:
            continue
        try:
            Color.parse(value)
        except (ColorParseError, TypeError, ValueError):
            raise ThemeFileError(f"{source}: '{key}' is not a colour: {value!r}") from None
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise ThemeFileError(f"{source}: 'variables' maps names to strings")
    if not isinstance(data.get("dark", True), bool):
        raise ThemeFileError(f"{source}: 'dark' is true or false")
    return Theme(**data)


def load_themes(folder: pathlib.Path = THEMES_DIR) -> list[Theme]:
    """Every theme described by a ``*.json`` file in ``folder``, sorted by name."""
    themes = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(read_regular(path, MAX_THEME_BYTES).decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ThemeFileError(f"{path.name}: {exc}") from None
        themes.append(theme_from_data(data, path.name))
    return sorted(themes, key=lambda theme: theme.name)


def theme_names() -> list[str]:
    """Every theme the app offers: its own and Textual's built-in ones."""
    from textual.theme import BUILTIN_THEMES

    return sorted({*BUILTIN_THEMES, *(theme.name for theme in load_themes())})


def unknown_theme(name: str) -> str:
    """A one-line message for a theme name that does not exist, naming the closest one."""
    import difflib

    names = theme_names()
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]}?" if close else "one of: " + ", ".join(names)
    return f"unknown theme {name!r}; {hint}"
