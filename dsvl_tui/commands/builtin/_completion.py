"""What a command's arguments complete to, for the TUI's prompt and the REPL's completer."""

from __future__ import annotations

from dsvl_tui.commands.builtin._conversation import SETTING_TYPES
from dsvl_tui.commands.completion import IMAGE_SUFFIXES
from dsvl_tui.commands.registry import registry

#: The file suffixes a command's path arguments complete to; folders always do, and an
#: empty set means folders only. Commands not listed complete to any file.
PATH_SUFFIXES: dict[str, frozenset[str]] = {
    "image": IMAGE_SUFFIXES,
    "load": frozenset({".json"}),
    "save": frozenset({".json"}),
    "export": frozenset({".md", ".markdown"}),
    "model": frozenset(),  # a checkpoint folder
}


def argument_choices(command: str, frontend: str) -> list[str]:
    """Words the first argument of ``/command`` can be, for completion; ``[]`` when it is free."""
    if command == "set":
        return list(SETTING_TYPES)
    if command == "help":
        return [c.name for c in registry.commands(frontend)]
    words = {"image": ["clear"], "system": ["default"], "upload": ["transcript"], "branch": ["next", "prev"]}
    return words.get(command, [])
