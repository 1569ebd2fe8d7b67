"""The loading thread's news in the plain REPL: queued, then shown above the prompt, never inside an answer.

``load_progress.ModelSlot`` loads a model in a thread and reports through ``LoadNotes._on_load_event``:
each line is queued (``_notes``) and the prompt is asked to show it above itself
(``_poke_prompt``); while no prompt is up (an answer streaming, lines piped in), the main loop shows
the queue at its next safe point (``_flush_notes``). Why a load failed is read from the slot and said
once. With ``--endpoint``: "not connected" with the reason, then "connected" when the server answers.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import TYPE_CHECKING

from dsvl_tui.repl.output import DIM, RED, ReplOutput

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession

    from dsvl_tui.backends.remote import RemoteBackend
    from dsvl_tui.backends.remote_probe import Connection
    from dsvl_tui.repl.load_progress import ModelSlot


class LoadNotes(ReplOutput):
    """A layer of ``app.Repl``: what the loading thread and the server watcher have to say."""

    _slot: ModelSlot  # the model, loading in a thread or loaded
    _load_error_said: bool  # the slot's last failure is on stderr (said once, by _flush_notes)
    _notes: queue.Queue[tuple[str, str]]  # (text, style) for _write_err
    _prompt: PromptSession[str] | None  # made in run()
    _connection: Connection | None  # with --endpoint: whether the server has answered
    _watch_stop: threading.Event  # ends the thread that tries an unreachable server again

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
            note = (f"{message} is ready", DIM)
        elif kind == "error":  # _flush_notes says the slot's error itself, after the lines queued before it
            self._poke_prompt()
            return
        else:
            note = (message, DIM)
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
                                 "a message sent meanwhile tries at once)", RED))
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
        self._notes.put((f"{'connected: ' if after_failures else ''}{model} at {backend.where} is ready", DIM))
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
