"""The Textual app: its panes, input, commands and ending; its main screen (``screens.MainScreen``) holds the tabs.

The first screen paints at once; the model loads in a thread and reports
progress as messages (``model.AppModel``). Answers go from Enter to the last
token through ``answering.Answering`` (its docstring tells the sequence: Enter,
journal, worker, chunks, done), as many at once as the model decodes together;
slash commands, the palette and the plain REPL share one registry.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from textual import events, on
from textual.app import App
from textual.driver import Driver
from textual.notifications import SeverityLevel

import themes
from dsvl_tui.commands import builtin as builtin_commands  # importing it fills the registry
from dsvl_tui.commands.registry import CommandError, registry
from dsvl_tui.core.conversation import Conversation
from dsvl_tui.core.options import Options
from dsvl_tui.core.text import error_line, printable
from dsvl_tui.storage import atomic
from dsvl_tui.storage.autosave import Autosaver
from dsvl_tui.storage.config import load_config
from dsvl_tui.storage.prompt_history import PromptHistory
from dsvl_tui.tui import heap, image_protocols
from dsvl_tui.tui import workers as gen
from dsvl_tui.tui.answering import Answering, Journaled
from dsvl_tui.tui.compare import TuiCompare
from dsvl_tui.tui.context_meter import ContextMeter
from dsvl_tui.tui.delivery import Delivery
from dsvl_tui.tui.end_signals import EndSignals
from dsvl_tui.tui.model import AppModel
from dsvl_tui.tui.palette import SlashCommands
from dsvl_tui.tui.reads import FileReads
from dsvl_tui.tui.saving import Saving
from dsvl_tui.tui.screens import MainScreen
from dsvl_tui.tui.session import TuiSession
from dsvl_tui.tui.widgets import ChatPane, ConversationTabs, PromptInput, StatusBar
from dsvl_tui.tui.workers import reported_from_a_thread

if TYPE_CHECKING:
    from dsvl_tui.backends.remote_probe import Connection
    from engine.types import ChatBackend, GenerationStats


STYLESHEET = Path(__file__).with_name("app.tcss")  # the app's layout; colours come from theme variables only


class DsvlApp(FileReads, ContextMeter, Saving, Delivery, App[int]):
    """Chat with a DeepSeek-VL model in several conversation tabs.

    Its mixins hold the rest of its methods, one job each: ``reads.FileReads`` (``read_then``),
    ``context_meter.ContextMeter`` (the status bar's context meter), ``saving.Saving`` (autosave,
    prompt history, config), ``delivery.Delivery`` (clipboard, screenshots). Textual finds their
    ``on_*`` handlers on this class (``@on`` ones must stay here: only an App class registers those).
    """

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
        self.engine: ChatBackend | None = None  # the model answering (``model.AppModel`` loads it)
        self.comparing = TuiCompare(self)  # /compare: tabs answered by a second model too, side by side
        self.model_error: str | None = None
        self.loading = False
        self.connection: Connection | None = None  # with --endpoint: whether the model server answered
        self.model = AppModel(self)
        self.answers = Answering(self)  # Enter to the last token: see tui.answering
        self.context_tokens: dict[str, int | None] = {}  # each conversation's prompt, measured (the context meter)
        self.autosaver = Autosaver(report=self._report_autosave)
        self._reading = 0  # file reads running in threads (read_then)
        self._typed_ahead: list[str] = []  # input submitted during those reads, run in order after them
        self.end_signals = EndSignals(self._end_by_signal)  # SIGTERM and SIGHUP end the app as Ctrl+Q does
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
        self.end_signals.catch()
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

    def on_conversation_tabs_active_pane_changed(self, event: ConversationTabs.ActivePaneChanged) -> None:
        self.refresh_status()
        self.measure_context(event.pane.conversation)

    def open_conversation(self, conversation: Conversation) -> None:
        if conversation.path is not None and conversation.path_stamp is None:
            conversation.path_stamp = atomic.stamp(conversation.path)  # /save replaces only this file
        if self.active.conversation.is_empty and not self.answers.busy(self.active):
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
        self.answers.withdraw(self.active)
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
        self.answers.mark_tabs()
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

    # -- answers (tui.answering) -----------------------------------------------
    @property
    def queue(self) -> gen.AnswerQueue:
        return self.answers.queue

    @property
    def stats(self) -> dict[str, GenerationStats]:
        return self.answers.stats

    def send(self, text: str) -> None:
        self.answers.send(text)

    def regenerate(self) -> None:
        self.answers.regenerate()

    def stop(self) -> None:
        """Stop the active pane's answer (Esc, ``/stop``)."""
        self.answers.withdraw(self.active)

    @property
    def sending(self) -> bool:
        """A message is waiting for its journal write before it is drawn and answered, or a file is being read."""
        return self.answers.journaling or self._reading > 0

    @reported_from_a_thread
    async def on_journaled(self, message: Journaled) -> None:
        await self.answers.journaled(message.job)

    @reported_from_a_thread
    async def on_answer_chunk(self, message: gen.AnswerChunk) -> None:
        await self.answers.chunk(message.job)

    @reported_from_a_thread
    async def on_answer_done(self, message: gen.AnswerDone) -> None:
        await self.answers.done(message)

    # -- the model (tui.model) -------------------------------------------------
    @property
    def _load_id(self) -> int:
        return self.model.load_id

    def load_model(self, model: str) -> None:
        self.model.load(model)

    def model_server(self) -> Any:
        return self.model.server()

    @reported_from_a_thread
    def on_model_progress(self, message: gen.ModelProgress) -> None:
        self.model.progress(message)

    @reported_from_a_thread
    async def on_model_loaded(self, message: gen.ModelLoaded) -> None:
        await self.model.loaded(message)

    @reported_from_a_thread
    async def on_model_failed(self, message: gen.ModelFailed) -> None:
        await self.model.failed(message)

    @reported_from_a_thread
    async def on_connection_changed(self, message: gen.ConnectionChanged) -> None:
        await self.model.connection_changed(message)

    # -- ending -----------------------------------------------------------------
    async def action_quit(self) -> None:
        self.exit(0)

    def _end_by_signal(self, number: int) -> None:
        self._save_partial_answers()  # first: the terminal may be gone, so the exit itself may fail
        self.exit(return_code=128 + number)

    def _save_partial_answers(self) -> None:
        """Stop what is generating, journal each answer so far as stopped, and wait for the journal."""
        if self.answers.save_partials():  # the first time only
            self.autosaver.stop()
            self.autosaver.join(timeout=10)

    @on(events.DeliveryFailed)
    def _download_failed(self, event: events.DeliveryFailed) -> None:
        """A /save or /export download that did not reach the browser: say so; the server's copy stays."""
        from dsvl_tui.web.client import DOWNLOAD_NAME

        if event.name == DOWNLOAD_NAME:
            self.session.error(f"the download did not reach your browser ({error_line(str(event.exception))}); "
                               "the file is still saved on the server: run the command again to retry")

    def on_unmount(self) -> None:
        self.model.stop_watching()
        self._save_partial_answers()
        self.end_signals.release()
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
