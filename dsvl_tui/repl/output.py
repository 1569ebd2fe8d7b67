"""What the plain REPL prints: answers to stdout, every notice to stderr, and the lists commands show.

Every notice goes through ``ReplOutput._write_err``: made ``printable`` there, for every caller,
wrapped between words on a terminal, dimmed or red on a colour one. Answers are rendered as Markdown
as they stream on a colour terminal (``printers.MarkdownPrinter``), else plain text
(``printers.PlainPrinter``). ``/resume``, ``/find`` and ``/help`` print numbered or aligned lists,
cut or wrapped to the terminal's width.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

from dsvl_tui.commands.session import FoundConversation, HelpSection, RecentConversation
from dsvl_tui.core.text import printable
from dsvl_tui.repl.terminal import isatty, wrap_items

if TYPE_CHECKING:
    from rich.console import Console

    from dsvl_tui.core.conversation import ChatMessage, Conversation
    from dsvl_tui.core.options import Options
    from dsvl_tui.repl.printers import MarkdownPrinter, PlainPrinter

DIM, RED, RESET = "\x1b[2m", "\x1b[31m", "\x1b[0m"


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(1, width - 1)] + "\u2026"


class ReplOutput:
    """The first layer of ``app.Repl``: where its output goes and how it looks. ``Repl.__init__`` sets
    the attributes declared here (and in each layer above)."""

    options: Options
    key_help: str  # the keys at the prompt, under /help
    exit_code: int
    _out: TextIO  # answers
    _err: TextIO  # everything else
    _colour: bool  # answers as Markdown, with colour
    _err_colour: bool  # notices dimmed or red
    _interactive: bool  # a prompt (not lines piped in)
    _console: Console | None  # rich's, made for the first Markdown answer
    _conversation: Conversation

    def info(self, message: str) -> None:
        self._write_err(message)

    def error(self, message: str) -> None:
        self._write_err(f"error: {message}", RED)

    def _failed(self, message: str) -> None:
        """``error`` for a line that failed (a command, a message); piped, it also makes the exit code 1."""
        self.error(message)
        if not self._interactive and self.exit_code == 0:
            self.exit_code = 1  # the lines after it still run, and the caller learns that one failed

    def choose_conversation(self, choices: Sequence[RecentConversation],
                            open: Callable[[RecentConversation], None]) -> None:
        """Print ``choices`` numbered, a long one wrapped under its title; ``/resume N`` opens one."""
        import textwrap

        width = self._width()
        lines = ["recent conversations (/resume N opens one):"]
        for number, choice in enumerate(choices, 1):
            lines += textwrap.wrap(f"{printable(choice.title)} ({choice.detail})", width,
                                   initial_indent=f"{number:>3}. ", subsequent_indent=" " * 5,
                                   break_long_words=True, break_on_hyphens=False)
        self.info("\n".join(lines))

    def choose_found(self, found: Sequence[FoundConversation], open: Callable[[FoundConversation], None],
                     query: str) -> None:
        """Print what /find found, numbered: the title and date, then the text around the match (one line,
        cut to the terminal); ``/find --open N WORDS`` opens one."""
        width = self._width()
        lines = [f"found in {len(found)} conversation{'s' if len(found) != 1 else ''} "
                 f"(/find --open N {printable(' '.join(query.split()))} opens one):"]
        for number, choice in enumerate(found, 1):
            head = f"{number:>3}. {printable(choice.title)} ({printable(choice.detail)})"
            snippet = "     " + " ".join(printable(choice.hit.snippet_text).split())
            lines += [_cut(head, width), _cut(snippet, width)]
        self.info("\n".join(lines))

    def show_message(self, conversation: Conversation, index: int) -> None:
        """Print the message found (``open_conversation`` printed the last ones)."""
        if conversation is self._conversation and 0 <= index < len(conversation.messages):
            self._write_err(f"message {index + 1} of {len(conversation.messages)}:", DIM)
            self._show_message(conversation.messages[index])

    def show_help(self, sections: Sequence[HelpSection]) -> None:
        """Print each section's rows aligned, then the REPL's keys, wrapped to the terminal at words:
        a row's text under its text, a key line between its `` · `` items."""
        import textwrap

        width, blocks = self._width(), []
        for section in sections:
            column = min(max((len(key) for key, _ in section.rows), default=0), 34)
            lines = []
            for key, does in section.rows:
                lines += textwrap.wrap(does, width, initial_indent=f"{key:<{column}}  ",
                                       subsequent_indent=" " * (column + 2), break_on_hyphens=False) or [key]
            blocks.append("\n".join(lines))
        self.info("\n\n".join([*blocks, wrap_items(self.key_help, width)]))

    def _width(self) -> int:
        """Columns for a notice: the terminal's (stderr's, else ``COLUMNS`` or 80) less one, so that
        no line ends in the last column; at least 40."""
        import shutil

        try:
            columns = os.get_terminal_size(self._err.fileno()).columns
        except (AttributeError, OSError, ValueError):  # not a terminal (a pipe, a test's StringIO)
            columns = shutil.get_terminal_size().columns
        return max(40, columns - 1)

    def _write_err(self, text: str, style: str = "") -> None:
        """Write one notice to stderr: made ``printable`` here, for every caller, then styled. On a
        terminal a line longer than it is broken between words (the terminal would cut a word)."""
        text = printable(text)
        if isatty(self._err):
            import textwrap

            width = self._width()
            text = "\n".join(part for line in text.split("\n") for part in (
                textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False, drop_whitespace=True,
                              subsequent_indent=" " * (len(line) - len(line.lstrip()))) or [line]
                if len(line) > width else [line]))
        if style and self._err_colour:
            text = f"{style}{text}{RESET}"
        self._err.write(text + "\n")
        self._err.flush()

    def _printer(self) -> PlainPrinter | MarkdownPrinter:
        from dsvl_tui.repl.printers import MarkdownPrinter, PlainPrinter

        if not self._colour:
            return PlainPrinter(self._out)
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self._out, force_terminal=True, highlight=False)
        return MarkdownPrinter(self._console)

    def _show_stats(self, answer: ChatMessage, model: str | None = None) -> None:
        """The answer's stats line; with ``model`` (a comparison), labelled with it."""
        from dsvl_tui.backends.choose import stats_line
        from dsvl_tui.core.conversation import side_label

        line = stats_line(answer.stats)
        if line:
            self._write_err(f"{side_label(model)}: {line}" if model is not None else line, DIM)

    def _show_message(self, message: ChatMessage) -> None:
        images = "".join(f"[image: {a.label}{' (missing)' if a.missing else ''}] " for a in message.images)
        who = "you" if message.role == "user" else "model"
        self._write_err(f"{who}: {images}{message.text}", DIM)
