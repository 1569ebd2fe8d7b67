"""The plain REPL: ``dsvl-chat --plain``, and what pipes and dumb terminals get.

A prompt-toolkit prompt reads a message or a slash command; the answer
streams below it (``Ctrl+C`` stops it) and the prompt comes back. The REPL
is a ``Session``, so the slash commands are the registry's own.

Keys at the prompt: Enter sends; Esc then Enter (Alt+Enter, or Ctrl+J)
starts a new line; Tab completes commands and paths; Ctrl+C clears the line;
Ctrl+D on an empty line quits. History is kept in ``paths.history_file()``,
shared with the full-screen app.

When stdin is not a terminal (``dsvl-chat --plain < questions.txt``) there
is no prompt: each input line is a message or a command.

Output (``output.ReplOutput``): answers go to stdout, everything else
(notices, errors, the stats line, load progress) to stderr. On a colour
terminal answers are rendered as Markdown as they stream
(``printers.MarkdownPrinter``); elsewhere they are plain text. Messages from
the loading thread are queued and shown above the prompt (or, while the prompt
is not up, at the next safe point), so they never cut into an answer
(``load_notes.LoadNotes``). Answers: ``answering.Answering``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from dsvl_tui.commands.registry import CommandError, registry
from dsvl_tui.core.conversation import Conversation
from dsvl_tui.core.options import Options
from dsvl_tui.core.text import error_line, valid_text
from dsvl_tui.repl.answering import Answering
from dsvl_tui.repl.input import SlashCompleter, key_bindings
from dsvl_tui.repl.load_progress import EngineFactory, ModelSlot
from dsvl_tui.repl.output import DIM
from dsvl_tui.repl.terminal import colour_terminal, interrupt_sets, isatty

T = TypeVar("T")

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession

    from dsvl_tui.backends.remote import RemoteBackend
    from engine.types import ChatBackend

KEY_HELP = (
    "keys: Enter sends · Esc then Enter (or Alt+Enter, Ctrl+J) starts a new line · Tab completes\n"
    "Ctrl+C stops an answer, or clears the line · Ctrl+D on an empty line (or /quit) leaves"
)


def default_engine_factory(options: Options) -> EngineFactory:
    """The REPL's ``ModelSlot`` loads through ``backends.choose.load_backend``, as every front end does."""
    def load(model: str, progress: Callable[[Any], None]) -> ChatBackend:
        from dsvl_tui.backends.choose import load_backend

        return load_backend(options, model, progress)

    return load


class Repl(Answering):
    """The plain front end; it implements ``Session`` for the slash commands.

    Its layers, each a module with one job, bottom first: ``output.ReplOutput`` (what it prints),
    ``load_notes.LoadNotes`` (the loading thread's lines), ``journaling.Journaling`` (autosave, end
    signals), ``compare.ReplCompare`` (/compare), ``answering.Answering`` (answers); this class holds
    the state they declare (``__init__``), the ``Session`` methods and the loop.

    ``input``/``output`` are prompt-toolkit's (tests pass ``create_pipe_input()``
    and ``DummyOutput()``); ``stdout``/``stderr`` are where answers and notices
    go; ``stdin`` is read line by line when there is no terminal to prompt on.
    """

    frontend = "repl"
    key_help = KEY_HELP

    def __init__(self, options: Options, *, engine_factory: EngineFactory | None = None, input: Any = None,
                 output: Any = None, stdout: TextIO | None = None, stderr: TextIO | None = None,
                 stdin: TextIO | None = None, colour: bool | None = None, history: Any = None) -> None:
        from dsvl_tui.commands import builtin as builtin_commands  # noqa: F401 - fills the registry

        self.options = options
        self._out = stdout or sys.stdout
        self._err = stderr or sys.stderr
        self._stdin = stdin or sys.stdin
        self._colour = colour_terminal(self._out) if colour is None else colour
        self._err_colour = colour_terminal(self._err) if colour is None else colour
        self._pt_input = input
        self._pt_output = output
        self._interactive = input is not None or isatty(self._stdin)
        self._history = history
        self._conversation = self._fresh_conversation()
        self._slot = ModelSlot(engine_factory or default_engine_factory(options), self._on_load_event)
        self._load_error_said = False  # the slot's last failure is on stderr (said once, by _flush_notes)
        self._notes = queue.Queue()  # (text, style) for _write_err
        self._prompt = None  # made in run()
        self._running = False
        self._cancel = None
        self._next_input = ""
        self._journal = None
        self._journal_problem = None  # the last autosave failure, said once
        self._journaling = False  # a journal write is under way (a SIGTERM waits for it)
        self._journal_lock = threading.RLock()  # one journal write at a time (/compare's thread writes too)
        self._end_after_journal = False
        self._console = None
        self._connection = None  # with --endpoint: whether the server has answered
        self._watch_stop = threading.Event()  # ends the thread that tries an unreachable server again
        self._compared = None  # /compare: the second side each message also goes to
        self.exit_code = 0

    # -- Session -------------------------------------------------------------------

    @property
    def conversation(self) -> Conversation:
        return self._conversation

    def send(self, text: str) -> None:
        from dsvl_tui.core.conversation import LimitError

        try:
            message = self._conversation.add_user(text)
        except LimitError as exc:  # more than a transcript holds: not sent, nothing recorded
            self._failed(str(exc))
            return
        # A model here: journaled before any work, with copies of its pictures, so a crash loses nothing. A
        # server: journaled once it takes the message (``_answer``); one it never got (down, refusing) is not a
        # conversation: it goes back to the prompt and stays in the prompt history.
        if not self.options.endpoint:
            self._autosave()
        self._answer(message)

    def regenerate(self) -> None:
        self._answer(None)

    def is_generating(self) -> bool:
        return self._cancel is not None

    def stop_generation(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def refresh(self) -> None:
        """Nothing to redraw: the REPL's output is a log."""

    def read_then(self, read: Callable[[], T], then: Callable[[T], None]) -> None:
        """The REPL waits for its commands anyway (Ctrl-C interrupts the read)."""
        then(read())

    def open_conversation(self, conversation: Conversation) -> None:
        self._require_idle("open a conversation")
        if conversation.path is not None and conversation.path_stamp is None:
            from dsvl_tui.storage.atomic import stamp

            conversation.path_stamp = stamp(conversation.path)  # /save replaces only this file
        self._conversation = conversation
        shown = conversation.messages[-2:]
        earlier = len(conversation.messages) - len(shown)
        if earlier:
            self._write_err(f"… {earlier} earlier messages", DIM)
        for message in shown:
            self._show_message(message)
        loaded = None if self.options.endpoint else self._slot.model  # a server's model is the server's choice
        if conversation.model and loaded and conversation.model != loaded:
            self.info(f"note: this conversation used {conversation.model}; /model {conversation.model} switches to it")

    def new_pane(self) -> None:
        self._require_idle("start a new conversation")
        old = self._conversation
        self._conversation = Conversation(system=old.system, settings=old.settings, model=old.model)
        self.info("new conversation" + (" (the previous one stays in /resume)" if old.message_count() else ""))

    def close_pane(self) -> None:
        raise CommandError("the REPL has a single conversation")

    def model_server(self) -> RemoteBackend | None:
        """The server that chooses the model (``--endpoint``), or None: models are loaded here."""
        from dsvl_tui.backends.remote import RemoteBackend

        if not self.options.endpoint:
            return None
        cancel = threading.Event()
        with interrupt_sets(cancel):  # the client is made at start, after one short try (remote_probe.PROBE_TIMEOUT)
            backend = self._slot.wait(cancel, poll=self._flush_notes)
        if not isinstance(backend, RemoteBackend):
            raise CommandError("still setting up the connection to the model server; try again in a moment")
        return backend

    def change_model(self, model: str) -> None:
        try:
            self._slot.load(model)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        self._load_error_said = False

    def set_theme(self, name: str) -> None:
        raise CommandError("themes are for the full-screen app")

    def theme_name(self) -> str | None:
        return None

    def set_input(self, text: str) -> None:
        self._next_input = text
        if not self._interactive:
            self.info("(no prompt to edit in: send the new version as the next line; the old one stays as a branch)")

    def copy_text(self, text: str) -> None:
        """The app's one clipboard path (OSC 52, through tmux inside it), written to this terminal."""
        from dsvl_tui.tui import clipboard

        if os.environ.get("TERM", "") in ("", "dumb") and self._pt_output is None:
            raise CommandError("copying needs a terminal that takes escape sequences (TERM is unset or dumb)")
        if self._pt_output is not None:
            output = self._pt_output

            def write(sequence: str) -> None:
                output.write_raw(sequence)
                output.flush()
        else:
            terminal = next((s for s in (self._out, self._err) if isatty(s)), None)
            if terminal is None:
                raise CommandError("copying needs a terminal (the output is redirected)")

            def write(sequence: str) -> None:
                terminal.write(sequence)
                terminal.flush()
        try:
            clipboard.copy(text, write)
        except clipboard.ClipboardError as exc:
            raise CommandError(str(exc)) from None

    def quit(self) -> None:
        self._running = False

    # -- the loop ------------------------------------------------------------------

    def run(self) -> int:
        """Prompt, answer, repeat until /quit or end of input; returns the exit code."""
        self._running = True
        self._slot.load(self.options.model)
        if self._interactive:
            self._prompt = self._make_prompt()
            from dsvl_tui.backends.choose import loading_line

            self.info(f"dsvl-chat: {loading_line(self.options)}; /help lists the commands, Ctrl+D leaves")
        restore_signals = self._catch_end_signals()
        try:
            if self.options.resume:
                self.handle("/resume")
            while self._running:
                self._flush_notes()
                try:
                    line = self._read()
                except EOFError:
                    break
                except KeyboardInterrupt:  # only without a prompt (Ctrl+C is a key binding at the prompt)
                    self.exit_code = 130
                    break
                self.handle(line)
        finally:
            restore_signals()
        self._watch_stop.set()
        self._flush_notes()
        return self.exit_code

    def handle(self, line: str) -> None:
        """Run one input: a command (``/...``), or a message (``//...`` sends one starting with ``/``)."""
        text = line.strip("\n").rstrip()
        if not text.strip():
            return
        if text.startswith("/") and not text.startswith("//"):
            conversation, updated = self._conversation, self._conversation.updated
            try:
                registry.run(self, text)
            except CommandError as exc:
                self._failed(str(exc))
            except Exception as exc:  # noqa: BLE001 - a broken command must not end the session
                self._failed(f"{text.split()[0]} failed: {error_line(exc)}")
            if self._conversation is not conversation or self._conversation.updated != updated:
                self._autosave()  # /undo, /load, /regenerate...
            return
        self.send(text[1:] if text.startswith("//") else text)

    def _read(self) -> str:
        """The next input, made valid text: bytes that were not UTF-8 arrive as lone surrogates (U+FFFD each)."""
        if self._prompt is None:
            line = self._stdin.readline()
            if not line:
                raise EOFError
            return valid_text(line)
        default, self._next_input = self._next_input, ""
        return valid_text(self._prompt.prompt(default=default))

    def _make_prompt(self) -> PromptSession[str]:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        from dsvl_tui.storage.paths import history_file

        history = self._history
        if history is None:
            try:
                path = history_file()
                path.parent.mkdir(parents=True, exist_ok=True)
                history = FileHistory(str(path))
            except OSError as exc:
                self.error(f"history is not saved: {exc}")
                history = InMemoryHistory()
        return PromptSession(
            message=self._prompt_text, multiline=True, prompt_continuation=self._continuation,
            key_bindings=key_bindings(self._on_empty_interrupt), completer=SlashCompleter(self.frontend),
            complete_while_typing=True, history=history, input=self._pt_input, output=self._pt_output,
            refresh_interval=0.5,
        )

    def _prompt_text(self) -> str:
        parts = []
        if self._slot.loading is not None:
            parts.append("loading")
        elif self._connection is not None and not self._connection.connected:
            parts.append("not connected")
        if self._conversation.pending:
            count = len(self._conversation.pending)
            parts.append(f"{count} image{'s' if count > 1 else ''}")
        return f"[{', '.join(parts)}] > " if parts else "> "

    def _continuation(self, width: int, line_number: int, wrap_count: int) -> str:
        return ".".rjust(width - 1) + " "

    # -- /compare (commands.builtin._compare.CompareHost) ---------------------------------

    def _on_empty_interrupt(self) -> None:
        self._notes.put(("(Ctrl+D or /quit leaves)", ""))
        self._poke_prompt()

    # -- answering -------------------------------------------------------------------

    # -- saving ----------------------------------------------------------------------

    # -- output ------------------------------------------------------------------------

    def _require_idle(self, action: str) -> None:
        if self.is_generating():
            raise CommandError(f"cannot {action} while an answer is being generated")

    def _fresh_conversation(self) -> Conversation:
        return Conversation(system=self.options.system, settings=dataclasses.replace(self.options.settings),
                            model=self.options.model)


def run_repl(options: Options) -> int:
    """``dsvl-chat --plain``."""
    if isinstance(sys.stdin, io.TextIOWrapper):  # piped lines that are not UTF-8: U+FFFD, not a UnicodeDecodeError
        sys.stdin.reconfigure(errors="replace")
    return Repl(options).run()
