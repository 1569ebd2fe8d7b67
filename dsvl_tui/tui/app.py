"""The Textual app: the model, the answer queue, autosave; its main screen (``screens.MainScreen``) holds the tabs.

The first screen paints at once; the model loads in a thread worker and
reports progress as messages. Answers go through one ``AnswerQueue`` (one
generation at a time across all tabs) and stream in thread workers that post
chunks; slash commands, the palette and the plain REPL share one registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from textual import events, on, work
from textual.app import App
from textual.css.query import NoMatches
from textual.driver import Driver
from textual.message import Message
from textual.notifications import SeverityLevel

import themes
from dsvl_tui.commands import builtin as builtin_commands  # importing it fills the registry
from dsvl_tui.commands.registry import CommandError, registry
from dsvl_tui.core.conversation import Conversation, LimitError
from dsvl_tui.core.options import Options
from dsvl_tui.core.text import error_line, printable
from dsvl_tui.storage import atomic
from dsvl_tui.storage.autosave import PARTIAL_SAVE_SECONDS, Autosaver
from dsvl_tui.storage.config import load_config, save_config
from dsvl_tui.storage.prompt_history import PromptHistory
from dsvl_tui.tui import clipboard, heap, image_protocols
from dsvl_tui.tui import workers as gen
from dsvl_tui.tui.compare import TuiCompare
from dsvl_tui.tui.palette import SlashCommands
from dsvl_tui.tui.screens import MainScreen
from dsvl_tui.tui.session import TuiSession
from dsvl_tui.tui.widgets import ChatPane, ConversationTabs, PromptInput, StatusBar

T = TypeVar("T")

if TYPE_CHECKING:
    from dsvl_tui.backends.remote_probe import Connection
    from engine.types import ChatBackend, GenerationStats, PreparesPrompts


@dataclass
class PromptsLoaded(Message):
    """The prompt history worker read the prompts of earlier runs (oldest first)."""

    prompts: list[str]


@dataclass
class Journaled(Message):
    """The autosave worker has written the snapshot holding ``job``'s question: draw it and answer."""

    job: gen.Job


# Signals that end the app the way Ctrl+Q does (the answer being generated is journaled as stopped).
_END_SIGNALS = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]

R = TypeVar("R")


def reported_from_a_thread(handler: Callable[[Any, Any], R]) -> Callable[[Any, Any], Awaitable[None]]:
    """For a handler of what a thread reports (load progress, an answer's chunks, a measured context).

    Such a report can still be in the queue, or its handler part way through an ``await``, while the
    app shuts down and its screens (or first their widgets) go: there is then nothing left to show it
    on, so it is dropped instead of failing on the empty screen stack or a widget already removed.
    """
    @functools.wraps(handler)
    async def guarded(app: Any, message: Any) -> None:
        if not app.screen_stack:
            return
        try:
            result = handler(app, message)
            if inspect.isawaitable(result):
                await result
        except (IndexError, NoMatches):  # the screen stack emptied, or a query on a screen gone
            if app.screen_stack and app.is_running:  # shutting down: the screen's widgets go before the screen
                raise

    return guarded


STYLESHEET = Path(__file__).with_name("app.tcss")  # the app's layout; colours come from theme variables only


class DsvlApp(App[int]):
    """Chat with a DeepSeek-VL model in several conversation tabs."""

    CSS_PATH = STYLESHEET.name
    TITLE = "dsvl-chat"
    COMMANDS = App.COMMANDS | {SlashCommands}
    # Keys: the main screen's (``MainScreen.BINDINGS``); Textual's App binds Ctrl+Q to quit on every screen.
    MODES = {"main": MainScreen}
    DEFAULT_MODE = "main"

    def __init__(self, options: Options | None = None, *, loader: Callable[..., ChatBackend] | None = None) -> None:
        super().__init__()
        self.options = options or Options()
        self.loader = loader  # engine.load unless a test stands in
        self.image_renderer = self.options.images  # read by every ImagePreview
        self.session = TuiSession(self)
        self.queue = gen.AnswerQueue()
        self.comparing = TuiCompare(self)  # /compare: tabs answered by a second model too, side by side
        self.engine: ChatBackend | None = None
        self.model_error: str | None = None
        self.loading = False
        self.stats: dict[str, GenerationStats] = {}  # the last answer's, by conversation id: each tab shows its own
        self.connection: Connection | None = None  # with --endpoint: whether the model server answered
        self._watch_stop = threading.Event()  # ends the thread that tries an unreachable server again
        self._load_id = 0
        self._context_tokens: dict[str, int | None] = {}
        self.autosaver = Autosaver(report=self._report_autosave)
        self._journaling: dict[ChatPane, gen.Job] = {}  # sent, not drawn until journaled
        self._reading = 0  # file reads running in threads (read_then)
        self._typed_ahead: list[str] = []  # input submitted during those reads, run in order after them
        self._partials_saved = False
        self._signals: list[tuple[int, Any]] = []  # (signal, the handler before ours)
        self.prompt_history = PromptHistory(report=self._report_autosave)
        for theme in themes.load_themes():
            self.register_theme(theme)
        self._config_notes: list[str] = []  # what the config file had that was ignored, shown once mounted
        self.theme = pick_theme(self.options.theme, set(self.available_themes), note=self._config_notes.append)

    def get_driver_class(self) -> type[Driver]:
        """Textual's driver; on Linux and macOS one whose input survives bytes that are not UTF-8 (``driver``)."""
        driver = super().get_driver_class()
        if driver.__module__ == "textual.drivers.linux_driver":  # not Windows, not a TEXTUAL_DRIVER override
            from dsvl_tui.tui.driver import InputDriver

            return InputDriver
        return driver

    def _handle_exception(self, error: Exception) -> None:
        """A bug in a handler ends the app as ``cli.main`` ends on one: exit code 1, one line, traceback in the log.

        Textual would print a page of traceback with local variables over the
        user's terminal (and, in tests, re-raise it: kept, through ``_exception``).
        """
        from dsvl_tui.core.crash import record

        line, details = record(error)
        self._return_code = 1
        if self._exception is None:
            self._exception = error
            self._exception_event.set()
        self.exit(return_code=1, message=line if details is None else f"{line}\n{details}")

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, lambda theme: self._remember(theme=theme.name))
        if self.options.theme:
            self._remember(theme=self.theme)
        self.prompt.focus()
        for line in self._config_notes:
            self.notify(line, severity="warning")
        self.run_worker(self.autosaver.run, thread=True, group="autosave", exit_on_error=False)
        self._catch_end_signals()
        self.run_worker(self._prompt_history_worker, thread=True, group="prompt-history", exit_on_error=False)
        # What exists once the first frame is up lives as long as the app (see heap). Not after a
        # model load: a replaced model caught in a reference cycle would then never be freed.
        self.call_after_refresh(heap.settle)
        # Load once the first frame is on screen: the user sees the app at once, the load comes second.
        self.call_after_refresh(self.load_model, self.options.model)
        if self.options.resume:
            self.run_command("/resume")

    def argument_choices(self, command: str) -> list[str]:
        """What the input box completes after ``/command ``."""
        if command == "theme":
            return sorted(self.available_themes)
        return builtin_commands.argument_choices(command, "tui")

    @property
    def in_browser(self) -> bool:
        """Served to a browser (``dsvl-chat web``, or textual-serve's web driver): keys the browser keeps
        (Ctrl+N, Ctrl+W, Ctrl+Q) never arrive, so the main screen offers others (``screens.WEB_KEYS``)."""
        return self.is_web or self.session.web is not None

    @property
    def main(self) -> MainScreen:
        """The main screen: the bottom of the screen stack (modal screens go over it)."""
        return cast(MainScreen, self.screen_stack[0])

    @property
    def prompt(self) -> PromptInput:
        return self.main.query_one("#prompt", PromptInput)

    @property
    def status(self) -> StatusBar:
        return self.main.query_one("#status", StatusBar)

    @property
    def tabs(self) -> ConversationTabs:
        return self.main.query_one("#tabs", ConversationTabs)

    @property
    def active(self) -> ChatPane:
        return self.tabs.active

    # -- panes ----------------------------------------------------------------
    def new_conversation(self) -> Conversation:
        return Conversation(system=self.options.system, settings=replace(self.options.settings),
                            model=self.options.model)

    def _update_tabs(self) -> None:
        for pane in self.tabs.panes:
            job = self.queue.for_pane(pane)
            mark = "" if job is None else "\u25cf " if job.started else "\u2026 "
            self.tabs.set_mark(pane, mark)

    def on_conversation_tabs_active_pane_changed(self, event: ConversationTabs.ActivePaneChanged) -> None:
        self.refresh_status()
        self.measure_context(event.pane.conversation)

    def open_conversation(self, conversation: Conversation) -> None:
        if conversation.path is not None and conversation.path_stamp is None:
            conversation.path_stamp = atomic.stamp(conversation.path)  # /save replaces only this file
        if self.active.conversation.is_empty and self.queue.for_pane(self.active) is None:
            self.active.conversation = conversation
            self.call_later(self.sync_pane, self.active, True)
        else:
            self.tabs.add(conversation)
            self.call_later(self.sync_pane, self.active)

    def new_pane(self) -> None:
        """A new tab starts from this tab's settings and system prompt (as /new does in the REPL)."""
        current = self.active.conversation
        conversation = self.new_conversation()
        conversation.system, conversation.settings = current.system, replace(current.settings)
        self.tabs.add(conversation)
        self.call_later(self.sync_pane, self.active)

    def close_pane(self) -> None:
        self._withdraw(self.active)
        if self.tabs.close(self.active) is None:
            self.tabs.add(self.new_conversation())
        self.call_later(self.sync_pane, self.active)

    def step_pane(self, offset: int) -> None:
        self.tabs.step(offset)
        self.prompt.focus()

    async def sync_pane(self, pane: ChatPane, force: bool = False) -> None:
        """Redraw ``pane`` if a command changed its conversation; refresh labels and the status bar."""
        if pane.is_mounted:
            await (pane.rebuild() if force else pane.catch_up())
        self._update_tabs()
        self.refresh_status()
        self.measure_context(pane.conversation)

    async def show_notice(self, text: str, error: bool = False, pane: ChatPane | None = None,
                          after: int | None = None) -> None:
        """A notice in ``pane`` (the active one) after its first ``after`` messages (``None``: at the end)."""
        if pane is None or not pane.is_attached:
            pane, after = self.active, None
        await pane.notice(text, error=error, after=after)

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """A toast, its text made ``printable`` and not read as markup (a path may hold ``[/b]``)."""
        super().notify(printable(message), title=printable(title), severity=severity, timeout=timeout,
                       markup=markup)

    def put_on_clipboard(self, text: str) -> None:
        """The one clipboard path (``clipboard.copy``: tmux-aware OSC 52); raises ``ClipboardError``."""
        self._clipboard = text  # Textual's own copy, which pasting inside the app uses
        clipboard.copy(text, self._write_to_terminal)

    def copy_to_clipboard(self, text: str) -> None:
        """Textual's copy keys (a selection, the input box) and a click on a code block: say how it went."""
        try:
            self.put_on_clipboard(text)
        except clipboard.ClipboardError as exc:
            self.notify(str(exc), severity="error")
        else:
            lines = text.count("\n") + 1
            self.notify(f"copied {lines} lines ({len(text):,} characters)" if lines > 1
                        else f"copied {len(text):,} characters", timeout=3)

    def _write_to_terminal(self, sequence: str) -> None:
        if self._driver is not None:
            self._driver.write(sequence)

    # -- input and commands ---------------------------------------------------
    @on(PromptInput.Submitted)
    def _submitted(self, event: PromptInput.Submitted) -> None:
        if self._reading:  # a command typed before is still reading a file (/image, /load): this waits for it
            self._typed_ahead.append(event.text)
        else:
            self._take(event.text)

    def _take(self, typed: str) -> None:
        """Run what was typed: a command, or a message (``//...`` sends one starting with ``/``)."""
        text = typed.strip()
        if text.startswith("/") and not text.startswith("//"):
            self.run_command(text)
        else:
            self.send(text[1:] if text.startswith("//") else typed)

    @on(PromptInput.ScrollRequest)
    def _scroll_chat(self, event: PromptInput.ScrollRequest) -> None:
        self.active.scroll_where(event.where)

    @on(PromptInput.FilesDropped)
    def _files_dropped(self, event: PromptInput.FilesDropped) -> None:
        import shlex

        self.run_command("/image " + " ".join(shlex.quote(str(path)) for path in event.paths))

    def run_command(self, line: str) -> None:
        """Run a slash command; a bad one gets a one-line error and nothing is sent."""
        try:
            registry.run(self.session, line)
        except CommandError as exc:
            self.session.error(str(exc))
        except Exception as exc:  # noqa: BLE001 - a command's bug must not end the app
            self.session.error(f"{line.split()[0]} failed: {error_line(exc)}")
        self.autosave(self.active.conversation)
        self.call_later(self.sync_pane, self.active)

    def run_palette_command(self, name: str, needs_argument: bool) -> None:
        if needs_argument:
            self.session.set_input(f"/{name} ")
        else:
            self.run_command(f"/{name}")

    # -- answers ----------------------------------------------------------------
    def send(self, text: str) -> None:
        """Add the user's message (with the pending images) and queue its answer."""
        pane, conversation = self.active, self.active.conversation
        if not text.strip() and not conversation.pending:
            return
        if self.queue.for_pane(pane) is not None or pane in self._journaling:
            self.session.set_input(text)
            self.session.error("this conversation is still waiting for an answer; press Esc to stop it first")
            return
        try:
            asked = conversation.add_user(text)
        except LimitError as exc:  # more than a transcript holds: kept in the input, not sent
            self.session.set_input(text)
            self.session.error(str(exc))
            return
        job = gen.Job(pane, conversation, asked)
        # Journal first, then draw: what the user sees sent is on disk (a large new image takes a while).
        self._journaling[pane] = job
        self.autosaver.save(conversation, then=lambda: self.post_message(Journaled(job)))

    @reported_from_a_thread
    async def on_journaled(self, message: Journaled) -> None:
        job = message.job
        if self._journaling.get(job.pane) is job:
            del self._journaling[job.pane]
            if job.pane.is_attached:
                await self._start_answer(job)

    @property
    def sending(self) -> bool:
        """A message is waiting for its journal write before it is drawn and answered, or a file is being read."""
        return bool(self._journaling) or self._reading > 0

    # -- file reads off the event loop ------------------------------------------
    def read_then(self, read: Callable[[], T], then: Callable[[T], None]) -> None:
        """``Session.read_then``: a transcript of up to the format's limits is read in a thread."""
        self._reading += 1
        self._read_in_thread(read, then)

    @work(thread=True, group="file-reads")
    def _read_in_thread(self, read: Callable[[], T], then: Callable[[T], None]) -> None:
        try:
            result = read()
        except Exception as exc:  # noqa: BLE001 - a bug in a read must not end the app
            problem = str(exc) if isinstance(exc, CommandError) else f"reading failed: {error_line(exc)}"
            self.call_from_thread(self._read_done, lambda: self.session.error(problem))
            return
        self.call_from_thread(self._read_done, lambda: then(result))

    def _read_done(self, finish: Callable[[], None]) -> None:
        self._reading -= 1
        try:
            finish()
        except CommandError as exc:
            self.session.error(str(exc))
        self.autosave(self.active.conversation)
        self.call_later(self.sync_pane, self.active)
        while self._typed_ahead and not self._reading:  # a message typed after /image gets the image
            self._take(self._typed_ahead.pop(0))

    def regenerate(self) -> None:
        conversation = self.active.conversation
        asked = next((m for m in reversed(conversation.messages) if m.role == "user"), None)
        if self.queue.for_pane(self.active) is None and self.active not in self._journaling and asked is not None:
            self.call_later(self._start_answer, gen.Job(self.active, conversation, asked))

    async def _start_answer(self, job: gen.Job) -> None:
        await self.sync_pane(job.pane)
        job.widget = await job.pane.start_answer()
        job.widget = await self.comparing.split(job)  # type: ignore[assignment]  # a ComparedPair stands for it
        self.queue.add(job)
        self._pump()

    def _pump(self) -> None:
        """Start the next answer if the model is free; tell the waiting ones why they wait."""
        if self.engine is not None and (job := self.queue.next()) is not None:
            if job.widget is not None:
                job.widget.state = "streaming"
                job.widget.set_marker("")
            self._generate(self.engine, job)
        for position, job in enumerate(self.queue.waiting, 1):
            if self.engine is None:
                reason = "waiting for the model to load" if self.model_error is None else \
                    "waiting for a model: load one with /model ID|PATH"
            else:
                reason = "waiting for its turn" + (f" ({position} ahead)" if position > 1 else "")
            if job.widget is not None:
                job.widget.wait(reason)
        self._update_tabs()
        self.refresh_status()

    @work(thread=True, group="generate", exit_on_error=False)
    def _generate(self, backend: ChatBackend, job: gen.Job) -> None:
        gen.generate_answer(backend, job, self.post_message, self.autosaver.save, PARTIAL_SAVE_SECONDS)

    @reported_from_a_thread
    async def on_answer_chunk(self, message: gen.AnswerChunk) -> None:
        text = message.job.take()
        if text and message.job.widget is not None and message.job.widget.is_attached:
            await message.job.widget.write(text)
        if message.job.pane is self.active:
            self.refresh_status()  # the context meter grows with the answer

    @reported_from_a_thread
    async def on_answer_done(self, message: gen.AnswerDone) -> None:
        job = message.job
        self.queue.finished(job)
        if (used := self._context_tokens.get(job.conversation.id)) is not None:
            self._context_tokens[job.conversation.id] = used + job.generated()  # until it is measured again
        if message.rejected:  # nothing generated: the message goes back to the input to edit
            if not self.prompt.text:
                self.session.set_input(job.asked.text)
            await job.pane.give_back(job.asked, message.error or "refused")
        else:
            if job.widget is not None and job.widget.is_attached:
                await job.widget.write(job.take())
            await job.pane.finish_answer(job.asked, message.text, message.stats, stopped=message.stopped,
                                         error=message.error)
            if message.stats is not None and message.stats.new_tokens:
                self.stats[job.conversation.id] = message.stats
            if self.connection is not None and not self.connection.connected and \
                    getattr(self.engine, "known", False):  # the server answered this message: it is up
                from dsvl_tui.backends.remote_probe import Connection

                self._watch_stop.set()
                self.connection = Connection(True)
                self._use_model_name()
        for notice in job.conversation.image_notices():  # a picture changed since it was attached or loaded
            self.session.info(notice)
        self.autosave(job.conversation)
        self._pump()
        self.measure_context(job.conversation)

    def _withdraw(self, pane: ChatPane) -> None:
        """Stop ``pane``'s answer: cancel it if it runs, take it out of the line if it waits."""
        self.comparing.stop(pane)
        job = self.queue.for_pane(pane)
        if job is not None and job.started:
            job.cancel.set()
        elif job is not None and self.queue.withdraw(job):
            self.post_message(gen.AnswerDone(job, "", None, True, None))

    def stop(self) -> None:
        """Stop the active pane's answer (Esc, ``/stop``)."""
        self._withdraw(self.active)

    # -- the model ---------------------------------------------------------------
    def load_model(self, model: str) -> None:
        """Load ``model`` in the background; the loaded one (if any) serves until it is ready."""
        self._load_id += 1
        self.loading, self.model_error = True, None
        self._watch_stop.set()
        self.refresh_status()
        if self.options.endpoint:  # which model is the server's to say: none is named until it has answered
            from dsvl_tui.backends.choose import loading_line

            self.status.model, self.status.detail = "", loading_line(self.options).replace("using", "asking", 1)
        else:
            self.status.model, self.status.detail = model, "starting"
        self.status.progress = None
        self._load(self._load_id, model)

    def _load(self, load_id: int, model: str) -> None:
        # A daemon thread, not a Textual worker: a load (a download, say) cannot be interrupted,
        # and quitting must not wait for it. It reports only by messages; stale ones are ignored.
        threading.Thread(target=gen.load_model, args=(load_id, model, self.options, self.post_message, self.loader),
                         name=f"dsvl-load-{load_id}", daemon=True).start()

    @reported_from_a_thread
    def on_model_progress(self, message: gen.ModelProgress) -> None:
        if message.load_id == self._load_id:
            self.status.detail = message.text
            self.status.progress = message.done / message.total if message.total else None

    @reported_from_a_thread
    async def on_model_loaded(self, message: gen.ModelLoaded) -> None:
        if message.load_id != self._load_id:
            return
        self.engine, self.model_error, self.loading = message.engine, None, False
        self._use_model_name()
        if getattr(message.engine, "remote", False) is True:
            from dsvl_tui.backends.remote_probe import Connection

            self.connection = Connection(True) if getattr(message.engine, "known", False) else None
            if self.connection is None:
                self._watch_server(message.load_id, message.engine)
        self._pump()
        self.measure_context(self.active.conversation)
        note = message.engine.info.compile_note
        if note:
            await self.show_notice(f"compile: not used ({note}); decoding eagerly")
        quantize_note = message.engine.info.quantize_note
        if quantize_note:
            await self.show_notice(f"quantize: {quantize_note}")

    def model_server(self) -> Any:
        """The ``RemoteBackend`` that chooses the model (``--endpoint``), or None: models are loaded here."""
        if not self.options.endpoint:
            return None
        if getattr(self.engine, "remote", False) is not True:
            raise CommandError("still setting up the connection to the model server; try again in a moment")
        return self.engine

    def _use_model_name(self) -> None:
        """The model's name for the tabs (a server's is known once it has answered)."""
        if self.engine is not None and self.engine.info.model_id:
            self.options.model = self.engine.info.model_id
            for pane in self.tabs.panes:
                pane.conversation.model = self.options.model

    def _watch_server(self, load_id: int, backend: Any) -> None:
        """Try the server again in a thread until it answers (``remote_probe.watch``), reporting each try."""
        from dsvl_tui.backends.remote_probe import watch

        self._watch_stop = stop = threading.Event()
        report = functools.partial(self._post_connection, load_id)
        threading.Thread(target=watch, args=(backend, report, stop), name=f"dsvl-connect-{load_id}",
                         daemon=True).start()

    def _post_connection(self, load_id: int, connection: Connection) -> None:
        self.post_message(gen.ConnectionChanged(load_id, connection))

    @reported_from_a_thread
    async def on_connection_changed(self, message: gen.ConnectionChanged) -> None:
        if message.load_id != self._load_id or self.engine is None:
            return
        before, self.connection = self.connection, message.connection
        where = getattr(self.engine, "where", "the model server")
        if message.connection.connected:
            self._use_model_name()
            if before is not None and not before.connected:
                await self.show_notice(f"connected to {where}: it serves {self.engine.info.model_id}")
        elif before is None:  # the first failure: say it once, with when the next tries come
            from dsvl_tui.backends.remote_probe import schedule_text

            await self.show_notice(f"not connected: {message.connection.reason} (trying again {schedule_text()}; "
                                   "a message sent meanwhile tries at once)", True)
        self.refresh_status()
        self.measure_context(self.active.conversation)

    @reported_from_a_thread
    async def on_model_failed(self, message: gen.ModelFailed) -> None:
        if message.load_id != self._load_id:
            return
        self.model_error, self.loading = message.error, False
        await self.show_notice(f"model not loaded: {message.error}", True)
        self._pump()

    def refresh_status(self) -> None:
        info, conversation = self.engine.info if self.engine is not None else None, self.active.conversation
        connection = self.connection
        if self.loading:
            state, detail = "loading", None
        elif info is None and self.model_error is not None:
            state, detail = "error", self.model_error
        elif getattr(self.engine, "remote", False) is True and (connection is None or not connection.connected):
            state = "not connected" if connection is not None else "connecting"
            detail = "" if connection is None else connection.reason + (
                f" · next try in {connection.retry_in:g} s" if connection.retry_in is not None else "")
        else:
            state, detail = "generating" if self.queue.running is not None else "ready", ""
        used = self._context_tokens.get(conversation.id)
        job = self.queue.running
        if used is not None and job is not None and job.conversation is conversation:
            used += job.generated()  # the prompt was measured; the answer streaming into it is counted
        self.status.show(state=state, detail=detail, info=info, stats=self.stats.get(conversation.id),
                         context_used=used,
                         pending_images=len(conversation.pending), waiting=len(self.queue.waiting))

    def measure_context(self, conversation: Conversation) -> None:
        if self.engine is not None and hasattr(self.engine, "prepare"):
            self._measure(self.engine, conversation)

    @work(thread=True, exclusive=True, group="context", exit_on_error=False)
    def _measure(self, backend: PreparesPrompts, conversation: Conversation) -> None:
        gen.measure_context(backend, conversation, self.post_message)

    @reported_from_a_thread
    def on_context_measured(self, message: gen.ContextMeasured) -> None:
        self._context_tokens[message.conversation.id] = message.tokens
        self.refresh_status()

    # -- autosave and config ----------------------------------------------------------
    def autosave(self, conversation: Conversation) -> None:
        self.autosaver.save(conversation)

    def _prompt_history_worker(self) -> None:
        # Reads the shared history file, then appends each new prompt; post_message is thread-safe.
        self.prompt_history.run(lambda prompts: self.post_message(PromptsLoaded(prompts)))

    @reported_from_a_thread
    def on_prompts_loaded(self, message: PromptsLoaded) -> None:
        self.prompt.add_earlier(message.prompts)

    def _report_autosave(self, problem: str) -> None:  # from the autosave and prompt history workers
        self.call_from_thread(self.notify, problem, severity="warning", markup=False)  # it names a path

    @work(thread=True, group="config", exit_on_error=False)
    def _remember(self, **choices: Any) -> None:
        try:
            save_config(**choices)
        except OSError as exc:
            self.call_from_thread(self.notify, f"could not save the config: {exc}", severity="warning", markup=False)

    async def action_quit(self) -> None:
        self.exit(0)

    def _catch_end_signals(self) -> None:
        """SIGTERM and SIGHUP (a closed terminal) end the app as Ctrl+Q does, keeping the partial answer."""
        try:
            loop = asyncio.get_running_loop()
            for number in _END_SIGNALS:
                previous = signal.getsignal(number)
                loop.add_signal_handler(number, self._end_by_signal, number)
                self._signals.append((number, previous))
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
            pass

    def _end_by_signal(self, number: int) -> None:
        self._save_partial_answers()  # first: the terminal may be gone, so the exit itself may fail
        self.exit(return_code=128 + number)

    def _save_partial_answers(self) -> None:
        """Stop what is generating, journal its answer so far as stopped, and wait for the journal."""
        if self._partials_saved:
            return
        self._partials_saved = True
        for job in [self.queue.running, *self.queue.waiting]:
            if job is not None:
                job.cancel.set()
        running = self.queue.running
        if running is not None and (snapshot := running.partial()) is not None:
            self.autosaver.save(snapshot)
        self.autosaver.stop()
        self.autosaver.join(timeout=10)

    def deliver_screenshot(self, filename: str | None = None, path: str | None = None,
                           time_format: str | None = None) -> str | None:
        """Ctrl+P → Screenshot. In a terminal the SVG goes into the data folder's ``screenshots/`` and a toast
        says where (Textual's default, ``~/Downloads``, is often missing on a server: "Failed to save
        screenshot"); in a browser it is a download, as Textual makes it."""
        if self.is_web or path is not None:
            return super().deliver_screenshot(filename, path, time_format)
        from textual._files import generate_datetime_filename

        from dsvl_tui.storage.paths import data_dir

        target = data_dir() / "screenshots" / (filename or generate_datetime_filename(self.title, ".svg", time_format))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic.atomic_write_bytes(target, self.export_screenshot().encode())
        except OSError as exc:
            self.notify(f"screenshot not saved: {error_line(exc)}", title="Screenshot", severity="error")
            return None
        self.notify(f"saved to {target}", title="Screenshot")
        return None

    @on(events.DeliveryFailed)
    def _download_failed(self, event: events.DeliveryFailed) -> None:
        """A /save or /export download that did not reach the browser: say so; the server's copy stays."""
        from dsvl_tui.web.client import DOWNLOAD_NAME

        if event.name == DOWNLOAD_NAME:
            self.session.error(f"the download did not reach your browser ({error_line(str(event.exception))}); "
                               "the file is still saved on the server: run the command again to retry")

    def on_unmount(self) -> None:
        self._watch_stop.set()
        self._save_partial_answers()
        with contextlib.suppress(RuntimeError, ValueError):
            loop = asyncio.get_running_loop()
            for number, previous in self._signals:
                loop.remove_signal_handler(number)
                signal.signal(number, previous)
        self.prompt_history.stop()
        if self.session.web is not None:
            self.session.web.close()  # upload pages still open: their folders go
        heap.release()


def pick_theme(requested: str | None, available: set[str], note: Callable[[str], None] | None = None) -> str:
    """The ``--theme`` asked for, else the remembered one, else the default (``note``: see ``load_config``)."""
    remembered = load_config(note).get("theme")
    return requested or (remembered if remembered in available else themes.DEFAULT_THEME)


def run_tui(options: Options, *, loader: Callable[..., ChatBackend] | None = None) -> int:
    """Run the app until the user quits; returns the exit status. ``loader``: ``engine.load`` unless given."""
    if options.theme and options.theme not in themes.theme_names():
        print(f"error: {themes.unknown_theme(options.theme)}", file=sys.stderr)
        return 2
    # Before Textual starts: textual-image reads the terminal's answers from its input.
    app = DsvlApp(replace(options, images=image_protocols.prepare()), loader=loader)
    app.run()
    return app.return_code or 0
