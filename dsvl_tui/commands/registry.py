"""The one command registry: slash commands for the TUI, its palette and the plain REPL.

A command is a name, a one-line summary, a usage string and a handler
``handler(session, args: str) -> None``. ``registry.run(session, line)``
parses a ``/command args`` line and runs it; an unknown command or a bad
argument raises ``CommandError`` with a one-line message (naming the closest
command where there is one) and nothing is sent to the model.

The built-in commands live in ``dsvl_tui.commands.builtin``; importing it fills
``registry``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dsvl_tui.commands.session import Session

Handler = Callable[[Session, str], None]

# How alike a typed word and a known one must be (difflib's ratio) to be offered as "did you mean": at 0.5,
# /frobnicate got /regenerate (its letters e, n, r, a, t, e in order). 0.7 keeps one slip of a short name
# (/sav, /hlep, /resme) and swapped letters of a long one (/regenrate, temprature).
SUGGEST_CUTOFF = 0.7


def closest(word: str, known: Iterable[str]) -> str | None:
    """The known name ``word`` was most likely meant to be, or None when none is close.

    A name that alone starts with ``word`` (two letters or more: /regen) counts as close.
    """
    names = list(known)
    starting = [name for name in names if name.startswith(word)] if len(word) >= 2 else []
    if len(starting) == 1:
        return starting[0]
    close = difflib.get_close_matches(word, names, n=1, cutoff=SUGGEST_CUTOFF)
    return close[0] if close else None


class CommandError(Exception):
    """A command line that cannot run; ``str()`` is a one-line message for the user."""


@dataclass(frozen=True)
class Command:
    name: str  # without the slash
    summary: str
    usage: str  # e.g. "/image PATH..."
    handler: Handler
    aliases: tuple[str, ...] = ()
    frontends: frozenset[str] = field(default_factory=lambda: frozenset({"tui", "repl"}))
    completes_paths: bool = False  # arguments are file paths (for completion)


class CommandRegistry:
    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}
        self._names: dict[str, str] = {}  # name or alias -> name

    def command(self, name: str, summary: str, usage: str | None = None, *, aliases: Iterable[str] = (),
                frontends: Iterable[str] = ("tui", "repl"),
                completes_paths: bool = False) -> Callable[[Handler], Handler]:
        """Decorator registering ``handler`` as ``/name``."""

        def register(handler: Handler) -> Handler:
            cmd = Command(name, summary, usage or f"/{name}", handler, tuple(aliases), frozenset(frontends),
                          completes_paths)
            self._commands[name] = cmd
            for key in (name, *cmd.aliases):
                self._names[key] = name
            return handler

        return register

    def commands(self, frontend: str | None = None) -> list[Command]:
        return sorted(
            (c for c in self._commands.values() if frontend is None or frontend in c.frontends), key=lambda c: c.name
        )

    def get(self, name: str) -> Command | None:
        key = self._names.get(name.lstrip("/").lower())
        return self._commands[key] if key else None

    def parse(self, line: str, frontend: str) -> tuple[Command, str]:
        """Split ``/name args``; raise ``CommandError`` for an unknown or unavailable command."""
        text = line.strip()
        if not text.startswith("/"):
            raise CommandError("commands start with '/'; type /help for the list")
        name, _, args = text[1:].partition(" ")
        cmd = self.get(name)
        if cmd is None:
            known = [n for n, target in self._names.items() if frontend in self._commands[target].frontends]
            close = closest(name.lower(), known)
            hint = f"; did you mean /{close}?" if close else "; type /help for the list"
            raise CommandError(f"unknown command /{name}{hint}")
        if frontend not in cmd.frontends:
            raise CommandError(f"/{cmd.name} is not available here; type /help for the list")
        return cmd, args.strip()

    def run(self, session: Session, line: str) -> None:
        cmd, args = self.parse(line, session.frontend)
        cmd.handler(session, args)

    def completions(self, prefix: str, frontend: str) -> list[str]:
        """Command names (with the slash) that start with ``prefix`` (which starts with '/')."""
        stem = prefix.lstrip("/").lower()
        return [f"/{c.name}" for c in self.commands(frontend) if c.name.startswith(stem)]


registry = CommandRegistry()
