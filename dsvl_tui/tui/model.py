"""The app's model: loading it off the event loop, and watching a model server's connection.

``AppModel.load`` starts a daemon thread (``workers.load_model``) that posts
``ModelProgress``, then ``ModelLoaded`` or ``ModelFailed``; each load has an
id, and reports of an older load are ignored, so the model loaded last wins.
The model loaded before serves until the new one is ready. With
``--endpoint`` the backend is a server's client: until the server has
answered, a thread tries it again (``remote_probe.watch``) and posts
``ConnectionChanged``; an answer that comes through also says it is up.

The state (``engine``, ``loading``, ``model_error``, ``connection``) is the
app's, read by the status bar, the commands and the answers.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

from dsvl_tui.commands.registry import CommandError
from dsvl_tui.tui import workers as gen

if TYPE_CHECKING:
    from dsvl_tui.backends.remote_probe import Connection
    from dsvl_tui.tui.app import DsvlApp


class AppModel:
    """Loads the app's model and follows its server (see the module's docstring)."""

    def __init__(self, app: DsvlApp) -> None:
        self.app = app
        self.load_id = 0
        self._watch_stop = threading.Event()  # ends the thread that tries an unreachable server again

    def load(self, model: str) -> None:
        """Load ``model`` in the background; the loaded one (if any) serves until it is ready."""
        app = self.app
        self.load_id += 1
        app.loading, app.model_error = True, None
        self._watch_stop.set()
        app.refresh_status()
        if app.options.endpoint:  # which model is the server's to say: none is named until it has answered
            from dsvl_tui.backends.choose import loading_line

            app.status.model, app.status.detail = "", loading_line(app.options).replace("using", "asking", 1)
        else:
            app.status.model, app.status.detail = model, "starting"
        app.status.progress = None
        # A daemon thread, not a Textual worker: a load (a download, say) cannot be interrupted,
        # and quitting must not wait for it. It reports only by messages; stale ones are ignored.
        threading.Thread(target=gen.load_model, args=(self.load_id, model, app.options, app.post_message, app.loader),
                         name=f"dsvl-load-{self.load_id}", daemon=True).start()

    def progress(self, message: gen.ModelProgress) -> None:
        if message.load_id == self.load_id:
            self.app.status.detail = message.text
            self.app.status.progress = message.done / message.total if message.total else None

    async def loaded(self, message: gen.ModelLoaded) -> None:
        if message.load_id != self.load_id:
            return
        app = self.app
        app.engine, app.model_error, app.loading = message.engine, None, False
        app.answers.queue.places = gen.answer_places(message.engine)  # answers decoded together (--max-batch)
        self.use_model_name()
        if getattr(message.engine, "remote", False) is True:
            from dsvl_tui.backends.remote_probe import Connection

            app.connection = Connection(True) if getattr(message.engine, "known", False) else None
            if app.connection is None:
                self._watch_server(message.load_id, message.engine)
        app.answers.pump()
        app.measure_context(app.active.conversation)
        note = message.engine.info.compile_note
        if note:
            await app.show_notice(f"compile: not used ({note}); decoding eagerly")
        quantize_note = message.engine.info.quantize_note
        if quantize_note:
            await app.show_notice(f"quantize: {quantize_note}")

    async def failed(self, message: gen.ModelFailed) -> None:
        if message.load_id != self.load_id:
            return
        app = self.app
        app.model_error, app.loading = message.error, False
        await app.show_notice(f"model not loaded: {message.error}", True)
        app.answers.pump()

    def server(self) -> Any:
        """The ``RemoteBackend`` that chooses the model (``--endpoint``), or None: models are loaded here."""
        app = self.app
        if not app.options.endpoint:
            return None
        if getattr(app.engine, "remote", False) is not True:
            raise CommandError("still setting up the connection to the model server; try again in a moment")
        return app.engine

    def use_model_name(self) -> None:
        """The model's name for the tabs (a server's is known once it has answered)."""
        app = self.app
        if app.engine is not None and app.engine.info.model_id:
            app.options.model = app.engine.info.model_id
            for pane in app.tabs.panes:
                pane.conversation.model = app.options.model

    # -- a model server's connection ------------------------------------------------------------
    def _watch_server(self, load_id: int, backend: Any) -> None:
        """Try the server again in a thread until it answers (``remote_probe.watch``), reporting each try."""
        from dsvl_tui.backends.remote_probe import watch

        self._watch_stop = stop = threading.Event()
        report = functools.partial(self._post_connection, load_id)
        threading.Thread(target=watch, args=(backend, report, stop), name=f"dsvl-connect-{load_id}",
                         daemon=True).start()

    def _post_connection(self, load_id: int, connection: Connection) -> None:
        self.app.post_message(gen.ConnectionChanged(load_id, connection))

    def stop_watching(self) -> None:
        self._watch_stop.set()

    async def connection_changed(self, message: gen.ConnectionChanged) -> None:
        app = self.app
        if message.load_id != self.load_id or app.engine is None:
            return
        before, app.connection = app.connection, message.connection
        where = getattr(app.engine, "where", "the model server")
        if message.connection.connected:
            self.use_model_name()
            app.answers.queue.places = gen.answer_places(app.engine)  # the server has said how many it decodes
            app.answers.pump()
            if before is not None and not before.connected:
                await app.show_notice(f"connected to {where}: it serves {app.engine.info.model_id}")
        elif before is None:  # the first failure: say it once, with when the next tries come
            from dsvl_tui.backends.remote_probe import schedule_text

            await app.show_notice(f"not connected: {message.connection.reason} (trying again {schedule_text()}; "
                                  "a message sent meanwhile tries at once)", True)
        app.refresh_status()
        app.measure_context(app.active.conversation)

    def answered(self) -> None:
        """An answer came through: a server not connected so far is up."""
        app = self.app
        if app.connection is not None and not app.connection.connected and getattr(app.engine, "known", False):
            from dsvl_tui.backends.remote_probe import Connection

            self._watch_stop.set()
            app.connection = Connection(True)
            self.use_model_name()

    def state(self) -> tuple[str, str | None]:
        """The status bar's state and its detail: loading, an error, the server's connection, or answering."""
        app = self.app
        connection = app.connection
        if app.loading:
            return "loading", None
        if app.engine is None and app.model_error is not None:
            return "error", app.model_error
        if getattr(app.engine, "remote", False) is True and (connection is None or not connection.connected):
            if connection is None:
                return "connecting", ""
            retry = f" · next try in {connection.retry_in:g} s" if connection.retry_in is not None else ""
            return "not connected", connection.reason + retry
        running = len(app.answers.queue.started)
        return ("generating" if running else "ready"), (f"{running} answers" if running > 1 else "")
