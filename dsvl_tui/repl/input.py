"""Input for the plain REPL: completion of slash commands and paths, and the keys.

``SlashCompleter`` completes ``/commands`` from the registry, then their
arguments: file paths for the commands that take them (filtered by
``builtin_commands.PATH_SUFFIXES``, quoted when they hold spaces) or fixed
words such as the ``/set`` keys. ``key_bindings`` makes Enter send and
Esc-Enter (Alt+Enter, Ctrl+J) start a new line, and lets Ctrl+C clear the line.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterable
from pathlib import Path

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.key_binding import KeyBindings

from dsvl_tui.commands.completion import quote_path
from dsvl_tui.commands.completion import word_start as _word_start
from dsvl_tui.commands.registry import registry
from dsvl_tui.core.text import valid_text


class SlashCompleter(Completer):
    """Completes ``/commands`` for one front end, then their arguments."""

    def __init__(self, frontend: str = "repl") -> None:
        self.frontend = frontend

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        from dsvl_tui.commands.builtin import argument_choices

        text = document.text_before_cursor
        if not text.startswith("/") or "\n" in text:
            return
        name, space, args = text[1:].partition(" ")
        if not space:
            for listed in registry.commands(self.frontend):
                if listed.name.startswith(name.lower()):
                    yield Completion("/" + listed.name, start_position=-len(text), display_meta=listed.summary)
            return
        cmd = registry.get(name)
        if cmd is None or self.frontend not in cmd.frontends:
            return
        if cmd.completes_paths:
            yield from self._paths(cmd.name, args, complete_event)
        elif not args.strip() or " " not in args.lstrip():
            word = args.lstrip()
            for choice in argument_choices(cmd.name, self.frontend):
                if choice.startswith(word):
                    yield Completion(choice, start_position=-len(word))

    def _paths(self, command: str, args: str, event: CompleteEvent) -> Iterable[Completion]:
        from dsvl_tui.commands.builtin import PATH_SUFFIXES

        raw = args[_word_start(args):]
        quote = raw[:1] if raw[:1] in ("'", '"') else ""
        partial = raw[len(quote):]
        if partial.startswith("-"):
            return  # an option such as --force
        suffixes = PATH_SUFFIXES.get(command)

        def wanted(path: str) -> bool:
            return suffixes is None or os.path.isdir(path) or Path(path).suffix.lower() in suffixes

        for found in PathCompleter(expanduser=True, file_filter=wanted).get_completions(Document(partial), event):
            full = partial + found.text
            is_dir = str(found.display_text).endswith("/")
            if quote:
                yield Completion(found.text + ("" if is_dir else quote), display=found.display)
            elif shlex.quote(full) != full and not full.startswith("~"):
                # a folder keeps its quote open, so the name inside it can be typed and completed next
                yield Completion(quote_path(full, "", final=not is_dir), start_position=-len(raw),
                                 display=found.display)
            else:
                yield Completion(found.text, display=found.display)


def key_bindings(on_empty_interrupt: Callable[[], None]) -> KeyBindings:
    """Enter sends, Esc-Enter / Ctrl+J add a line, Ctrl+C clears the line (or calls the hook)."""
    bindings = KeyBindings()

    @bindings.add("enter")
    def _send(event) -> None:
        buffer = event.current_buffer
        text = valid_text(buffer.text)  # bytes that were not UTF-8 come as lone surrogates: U+FFFD each
        if text != buffer.text:
            buffer.text = text  # before the history file, which cannot store a lone surrogate, gets it
        buffer.validate_and_handle()  # a completion picked with Tab is in the text already

    @bindings.add("escape", "enter")
    @bindings.add("c-j")
    def _newline(event) -> None:
        event.current_buffer.insert_text("\n")

    @bindings.add("c-c")
    def _clear(event) -> None:
        buffer = event.current_buffer
        if buffer.text:
            buffer.reset()
        else:
            on_empty_interrupt()

    return bindings
