"""The command palette's entries, made from the one command registry.

Commands that need an argument (``/image PATH...``) are not run from the
palette: choosing one puts ``/image `` in the input box, ready to complete.
Commands with no argument, or only optional ones, run at once.
"""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content

from dsvl_tui.commands.registry import Command, registry


def needs_argument(command: Command) -> bool:
    """Whether the usage names an argument that is not in [brackets]."""
    words = command.usage.split()[1:]
    return any(not word.startswith("[") for word in words)


class SlashCommands(Provider):
    """Every slash command of the TUI, as a palette entry."""

    def _commands(self) -> list[Command]:
        return registry.commands("tui")

    def _choose(self, command: Command) -> None:
        self.app.run_palette_command(command.name, needs_argument(command))  # type: ignore[attr-defined]

    async def discover(self) -> Hits:
        for command in self._commands():
            yield DiscoveryHit(Content(command.usage), partial(self._choose, command), text=command.usage,
                               help=command.summary)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            score = max(matcher.match(command.usage), matcher.match(f"{command.name} {command.summary}") * 0.8)
            if score > 0:
                yield Hit(score, matcher.highlight(command.usage), partial(self._choose, command),
                          text=command.usage, help=command.summary)
