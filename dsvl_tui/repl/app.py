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

Output: answers go to stdout, everything else (notices, errors, the stats
line, load progress) to stderr. On a colour terminal answers are rendered as
Markdown as they stream (``printers.MarkdownPrinter``); elsewhere they are
plain text. Messages from the loading thread are queued and shown above the
prompt (or, while the prompt is not up, at the next safe point), so they
never cut into an answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from dsvl_tui.commands.registry import CommandError, registry
from dsvl_tui.commands.session import FoundConversation, HelpSection, RecentConversation
from dsvl_tui.core.conversation import ChatMessage, Conversation
from dsvl_tui.core.options import Options
from dsvl_tui.core.text import error_line, printable, valid_text
from dsvl_tui.repl.input import SlashCompleter, key_bindings
from dsvl_tui.repl.load_progress import EngineFactory, ModelSlot
from dsvl_tui.repl.terminal import colour_terminal, interrupt_sets, isatty, keys_not_echoed, wrap_items

T = TypeVar("T")

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession
    from rich.console import Console

    from dsvl_tui.backends.compare import ComparedThread, CompareRequest, CompareSide
    from dsvl_tui.backends.remote import RemoteBackend
    from dsvl_tui.backends.remote_probe import Connection
    from dsvl_tui.repl.printers import MarkdownPrinter, PlainPrinter
    from dsvl_tui.storage.journal import Journal
    from engine.types import ChatBackend

KEY_HELP = (
    "keys: Enter sends · Esc then Enter (or Alt+Enter, Ctrl+J) starts a new line · Tab completes\n"
    "Ctrl+C stops an answer, or clears the line · Ctrl+D on an empty line (or /quit) leaves"
)
_DIM, _RED, _RESET = "\x1b[2m", "\x1b[31m", "\x1b[0m"


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(1, width - 1)] + "\u2026"


def default_engine_factory(options: Options) -> EngineFactory:
    """The REPL's ``ModelSlot`` loads through ``backends.choose.load_backend``, as every front end does."""
    def load(model: str, progress: Callable[[Any], None]) -> ChatBackend:
        from dsvl_tui.backends.choose import load_backend

        return load_backend(options, model, progress)

    return load


class Repl:
    """The plain front end; it implements ``Session`` for the slash commands.

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
        self._notes: queue.Queue[tuple[str, str]] = queue.Queue()  # (text, style) for _write_err
        self._prompt: PromptSession[str] | None = None  # made in run()
        self._running = False
        self._cancel: threading.Event | None = None
        self._next_input = ""
        self._journal: Journal | None = None
        self._journal_problem: str | None = None  # the last autosave failure, said once
        self._journaling = False  # a journal write is under way (a SIGTERM waits for it)
        self._end_after_journal = False
        self._console: Console | None = None
        self._connection: Connection | None = None  # with --endpoint: whether the server has answered
        self._watch_stop = threading.Event()  # ends the thread that tries an unreachable server again
        self._compared: CompareSide | None = None  # /compare: the second side each message also goes to
        self.exit_code = 0

    # -- Session -------------------------------------------------------------------

    @property
    def conversation(self) -> Conversation:
        return self._conversation

    def info(self, message: str) -> None:
        self._write_err(message)

    def error(self, message: str) -> None:
        self._write_err(f"error: {message}", _RED)

    def _failed(self, message: str) -> None:
        """``error`` for a line that failed (a command, a message); piped, it also makes the exit code 1."""
        self.error(message)
        if not self._interactive and self.exit_code == 0:
            self.exit_code = 1  # the lines after it still run, and the caller learns that one failed

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
            self._write_err(f"… {earlier} earlier messages", _DIM)
        for message in shown:
            self._show_message(message)
        loaded = None if self.options.endpoint else self._slot.model  # a server's model is the server's choice
        if conversation.model and loaded and conversation.model != loaded:
            self.info(f"note: this conversation used {conversation.model}; /model {conversation.model} switches to it")

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
            self._write_err(f"message {index + 1} of {len(conversation.messages)}:", _DIM)
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

    def compare_host(self) -> Repl:
        return self

    def compared_side(self) -> CompareSide | None:
        return self._compared

    def load_compared(self, request: CompareRequest) -> CompareSide:
        from dsvl_tui.backends.compare import load_side
        from dsvl_tui.repl.load_progress import ProgressLines, describe_failure

        cancel = threading.Event()
        with interrupt_sets(cancel):
            main = self._slot.wait(cancel, poll=self._flush_notes)
            if main is None:
                raise CommandError("no model loaded to compare with; /model ID loads one")
            try:
                return load_side(self.options, request, main, say=self.info, progress=ProgressLines(self.info))
            except (CommandError, ValueError):
                raise
            except Exception as exc:  # noqa: BLE001 - any load failure is one line; the REPL goes on
                raise CommandError(f"the compared model: {describe_failure(exc)}") from None

    def set_compared(self, side: CompareSide | None) -> None:
        self._compared = side

    def _compare_begin(self, conversation: Conversation) -> ComparedThread | None:
        """The compared answer, started with the main one (``/compare``); its label first."""
        if self._compared is None:
            return None
        from dsvl_tui.backends.compare import ComparedThread, side_label

        self._write_err(f"== {side_label(conversation.model)} ==", _DIM)
        return ComparedThread(self._compared, conversation)

    def _compare_end(self, compared: ComparedThread, answer: ChatMessage, cancel: threading.Event) -> None:
        """Wait for the compared answer, keep it on ``answer``, print it under its label with its stats."""
        from dsvl_tui.backends.choose import stats_line

        answer.compared = compared.finish(cancel.is_set())
        self._write_err(f"== {compared.turn.side.label} ==", _DIM)
        printer = self._printer()
        printer.feed(answer.compared.text)
        printer.finish()
        if answer.compared.error:
            self._failed(f"the compared model: {answer.compared.error}")
        line = stats_line(answer.compared.stats)
        if line:
            self._write_err(f"{compared.turn.side.label}: {line}", _DIM)

    def _on_empty_interrupt(self) -> None:
        self._notes.put(("(Ctrl+D or /quit leaves)", ""))
        self._poke_prompt()

    # -- answering -------------------------------------------------------------------

    def _answer(self, mine: ChatMessage | None) -> None:
        """Stream an answer to the conversation's last user message.

        ``mine`` is the message just sent: if no answer can start (no model, a
        bad image), it is taken back out and its text returned to the prompt.
        """
        from dsvl_tui.core.turn import stream_answer
        from dsvl_tui.storage.autosave import PARTIAL_SAVE_SECONDS
        from engine.errors import EngineError

        conversation = self._conversation
        cancel = threading.Event()
        self._cancel = cancel
        try:
            with interrupt_sets(cancel), keys_not_echoed(self._stdin, self._out, self._err):
                backend = self._backend(cancel)
                if backend is None:
                    self._take_back(mine)
                    return
                printer = self._printer()
                notes: list[str] = []  # what the server sent that was dropped: said after the answer
                compared = self._compare_begin(conversation)
                try:
                    # The answer so far is journaled (as stopped) as it streams, so even kill -9 keeps most of it.
                    answer = stream_answer(backend, conversation, cancel=cancel, on_chunk=printer.feed,
                                           on_note=notes.append,
                                           on_open=self._autosave if self.options.endpoint else None,
                                           checkpoint=self._checkpoint, every=PARTIAL_SAVE_SECONDS)
                except EngineError as exc:  # input problems, raised before anything is generated
                    if compared is not None:
                        compared.stop()
                    self._failed(str(exc))
                    self._take_back(mine)
                    return
                finally:
                    printer.finish()
                if compared is not None:
                    self._show_stats(answer, conversation.model)
                    self._compare_end(compared, answer, cancel)
        finally:
            self._cancel = None
            for notice in conversation.image_notices():  # a picture changed since it was attached or loaded
                self.info(notice)
        for note in notes:
            self.info(note)
        if answer.error:
            self._failed(answer.error)
        if answer.compared is None:
            self._show_stats(answer)
        self._autosave()

    def _checkpoint(self, snapshot: Conversation) -> None:
        """Journal the answer so far (``Turn.partial``), unless the conversation was replaced meanwhile."""
        if snapshot.id == self._conversation.id:
            self._autosave(snapshot)

    def _backend(self, cancel: threading.Event) -> ChatBackend | None:
        if self._slot.backend is None and self._slot.loading is not None:
            self._write_err(f"waiting for {self._slot.loading} to load (Ctrl+C gives up)", _DIM)
        backend = self._slot.wait(cancel, poll=self._flush_notes)
        self._flush_notes()  # says why the load failed, once
        if backend is None and not cancel.is_set():
            if self._interactive or self._slot.error is None:
                self.error("no model loaded; /model ID loads one")
            if not self._interactive:
                self.exit_code, self._running = 4, False
        elif backend is not None:
            self._conversation.model = self._slot.model or self._conversation.model
        return backend

    def _take_back(self, mine: ChatMessage | None) -> None:
        conversation = self._conversation
        if mine is None:  # /regenerate: the question stays, and the answer it had is shown again
            last = conversation.messages[-1] if conversation.messages else None
            if last is not None and conversation.alternatives.get(last.id):
                conversation.take_back(last)
            return
        if not conversation.take_back(mine):
            return
        conversation.pending[:0] = mine.images
        if self._interactive:
            self._next_input = mine.text
            self._write_err("(not sent: your message is back at the prompt)", _DIM)

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
        from dsvl_tui.backends.compare import side_label

        line = stats_line(answer.stats)
        if line:
            self._write_err(f"{side_label(model)}: {line}" if model is not None else line, _DIM)

    def _show_message(self, message: ChatMessage) -> None:
        images = "".join(f"[image: {a.label}{' (missing)' if a.missing else ''}] " for a in message.images)
        who = "you" if message.role == "user" else "model"
        self._write_err(f"{who}: {images}{message.text}", _DIM)

    # -- saving ----------------------------------------------------------------------

    def _autosave(self, snapshot: Conversation | None = None) -> None:
        """Journal the conversation (or ``snapshot`` of it, an answer so far). A failure is said once;
        every later change is tried again, and the first success after failures is said too."""
        if self._journal is None:
            from dsvl_tui.storage.journal import Journal, sweep_temp_files

            self._journal = Journal()
            sweep_temp_files()  # what a killed writer left, before this run writes anything
        self._journaling = True
        try:
            problem = self._journal.record(snapshot or self._conversation)
        finally:
            self._journaling = False
        if problem and problem != self._journal_problem:
            self.error(f"{problem} (tried again at each change; /save still works)")
        elif not problem and self._journal_problem:
            self.info("autosave works again")
        self._journal_problem = problem
        if self._end_after_journal and self._cancel is None:
            raise SystemExit(self.exit_code)

    def _catch_end_signals(self) -> Callable[[], None]:
        """SIGTERM and SIGHUP end the REPL as /quit does: an answer being generated is stopped and
        journaled, a journal write under way is finished first. Returns what puts the old handlers back."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {}
        for name in ("SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                number = getattr(signal, name)
                previous[number] = signal.signal(number, self._on_end_signal)

        def restore() -> None:
            for number, handler in previous.items():
                signal.signal(number, handler)

        return restore

    def _on_end_signal(self, number: int, frame: object) -> None:
        self._running, self.exit_code = False, 128 + number
        if self._cancel is not None:  # answering: the answer stops, is journaled, and the loop ends
            self._cancel.set()
        elif self._journaling:
            self._end_after_journal = True
        else:
            raise SystemExit(self.exit_code)

    # -- output ------------------------------------------------------------------------

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
            text = f"{style}{text}{_RESET}"
        self._err.write(text + "\n")
        self._err.flush()

    def _on_load_event(self, kind: str, message: str) -> None:
        """From the loading thread: queue the line; the prompt (or the main loop) shows it."""
        if kind == "ready":
            from dsvl_tui.backends.remote import RemoteBackend

            backend = self._slot.backend
            if isinstance(backend, RemoteBackend):
                self._server_ready(backend)
                return
            self._conversation.model = message
            if self._slot.announced:  # the engine's "... ready on cpu (float32)" line said it
                return
            note = (f"{message} is ready", _DIM)
        elif kind == "error":  # _flush_notes says the slot's error itself, after the lines queued before it
            self._poke_prompt()
            return
        else:
            note = (message, _DIM)
        self._notes.put(note)
        self._poke_prompt()

    def _server_ready(self, backend: RemoteBackend) -> None:
        """``--endpoint``: ready once the server has answered; until then "not connected", said once with the
        reason and when it is tried again (``remote_probe.watch``, in a thread), then "connected" when it answers."""
        from dsvl_tui.backends.remote_probe import Connection, schedule_text, watch

        def report(connection: Connection) -> None:
            before, self._connection = self._connection, connection
            if connection.connected:
                self._connected(backend, after_failures=before is not None)
            elif before is None:
                self._notes.put((f"error: not connected: {connection.reason} (trying again {schedule_text()}; "
                                 "a message sent meanwhile tries at once)", _RED))
                self._poke_prompt()

        self._watch_stop.set()
        if backend.known:
            self._connection = Connection(True)
            self._connected(backend, after_failures=False)
            return
        self._connection, self._watch_stop = None, threading.Event()
        threading.Thread(target=watch, args=(backend, report, self._watch_stop), name="dsvl-connect",
                         daemon=True).start()

    def _connected(self, backend: RemoteBackend, *, after_failures: bool) -> None:
        model = backend.info.model_id
        if not self._conversation.messages:
            self._conversation.model = model
        self._notes.put((f"{'connected: ' if after_failures else ''}{model} at {backend.where} is ready", _DIM))
        self._poke_prompt()

    def _poke_prompt(self) -> None:
        app = self._prompt.app if self._prompt is not None else None
        loop = getattr(app, "loop", None) if app is not None and app.is_running else None
        if loop is None:
            return  # shown at the next safe point
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: same
            loop.call_soon_threadsafe(self._flush_above_prompt)

    def _flush_above_prompt(self) -> None:
        from prompt_toolkit.application import run_in_terminal

        if not self._notes.empty() or self._unsaid_load_error():
            run_in_terminal(self._flush_notes, in_executor=False)

    def _flush_notes(self) -> None:
        while True:
            try:
                text, style = self._notes.get_nowait()
            except queue.Empty:
                break
            self._write_err(text, style)
        error = self._unsaid_load_error()
        if error is not None:
            self._load_error_said = True
            self.error(error)

    def _unsaid_load_error(self) -> str | None:
        """Why the last load failed, if that is not on stderr yet. Read from the slot (set before its
        ``wait`` returns), not from a queued note, so it is said before any hint that follows it."""
        return None if self._load_error_said else self._slot.error

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
