"""Loading a model for the line-based front ends: progress lines, and a background slot.

``ProgressLines`` turns the engine's ``LoadProgress`` events into a few
readable lines (a new stage, or at most one line every couple of seconds),
since a log or a prompt cannot take a line rewritten in place.

``ModelSlot`` holds the model the REPL answers with and loads the next one
in a thread, so the prompt is usable while weights load; the current model
keeps answering until the new one is ready.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from dsvl_tui.core.text import error_line
from engine.errors import EngineError
from engine.types import ChatBackend

EngineFactory = Callable[[str, Callable[[Any], None]], ChatBackend]  # (model, progress) -> backend


class ProgressLines:
    """Call with each ``LoadProgress``; ``emit`` gets the lines worth showing."""

    def __init__(self, emit: Callable[[str], None], *, every: float = 2.0) -> None:
        self._emit = emit
        self._every = every
        self._stage: str | None = None
        self._shown_at = 0.0

    def __call__(self, event: Any) -> None:
        stage = getattr(event, "stage", None)
        message = getattr(event, "message", "") or str(event)
        now = time.monotonic()
        if stage == self._stage and stage != "ready" and now - self._shown_at < self._every:
            return
        self._stage, self._shown_at = stage, now
        total = getattr(event, "total", None)
        if stage == "download" and total and total > 1:
            message = f"{message} ({min(100, 100 * getattr(event, 'done', 0) // total)}%)"
        self._emit(message)

    @property
    def last_stage(self) -> str | None:
        """The stage of the last line emitted (``"ready"`` once the engine has said what it loaded)."""
        return self._stage


def describe_failure(exc: BaseException) -> str:
    """One line for a failed load: the engine's own message, or the exception's type and text."""
    if isinstance(exc, EngineError):
        return error_line(exc)
    return f"failed to load the model: {error_line(exc)}"


class ModelSlot:
    """The current backend, and at most one model loading in the background.

    ``notify(kind, message)`` is called from the loading thread: kind is
    ``"progress"``, ``"ready"`` or ``"error"``.
    """

    def __init__(self, factory: EngineFactory, notify: Callable[[str, str], None]) -> None:
        self._factory = factory
        self._notify = notify
        self._changed = threading.Condition()
        self.backend: ChatBackend | None = None
        self.model: str | None = None  # the name the backend was loaded as
        self.loading: str | None = None  # the model being loaded, if any
        self.error: str | None = None  # why the last load failed
        self.announced = False  # the last load's progress lines already said it is ready (and on what)

    def load(self, model: str) -> None:
        """Start loading ``model``; raises ``RuntimeError`` if another load is running."""
        with self._changed:
            if self.loading is not None:
                raise RuntimeError(f"{self.loading} is still loading; wait for it first")
            self.loading, self.error = model, None
        thread = threading.Thread(target=self._load, args=(model,), name="dsvl-load", daemon=True)
        thread.start()

    def _load(self, model: str) -> None:
        progress = ProgressLines(lambda line: self._notify("progress", line))
        try:
            backend = self._factory(model, progress)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line for the user
            with self._changed:
                self.loading, self.error = None, describe_failure(exc)
                self._changed.notify_all()
            self._notify("error", self.error)
            return
        with self._changed:
            self.backend, self.model, self.loading = backend, model, None
            self.announced = progress.last_stage == "ready"
            self._changed.notify_all()
        self._notify("ready", model)

    def wait(self, cancel: threading.Event, poll: Callable[[], None] = lambda: None) -> ChatBackend | None:
        """The backend once no load is running (``None`` if there is none, or on ``cancel``).

        Returns at once when a model is loaded, even if another is loading;
        ``poll`` runs every tenth of a second while waiting.
        """
        while True:
            with self._changed:
                if cancel.is_set():
                    return None
                if self.backend is not None or self.loading is None:
                    return self.backend
                self._changed.wait(0.1)
            poll()
