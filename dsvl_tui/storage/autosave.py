"""Autosave for the TUI: conversation snapshots journaled in order by one worker thread.

``save()`` is cheap and safe on the event loop: it queues a shallow copy of
the conversation; the worker writes the snapshots one after the other
through ``Journal.record`` (an atomic file write), so a slow disk never
blocks the interface and a later snapshot is never overwritten by an
earlier one. ``save(conv, then=...)`` calls ``then`` (from the worker) once
that snapshot is on disk, or failed to be: the app draws a new message only
then, so what is on screen is already journaled. ``stop()`` lets the worker
finish what is queued and end; ``join()`` waits for that.

The search index (``/find``) is updated by the same worker, after ``then``:
the app's answer never waits for it, and a burst of snapshots (an answer
streaming) is indexed once, when the queue is empty.

Something that streams into a conversation outside its messages (``/compare``'s compared answer, which is
kept on the main answer only once both have ended) is registered with ``streaming(id, partial)``: every
snapshot of that conversation is then ``partial.amend``-ed with it so far (whichever part of the app
saves it), and ``stop()`` journals ``partial.snapshot()`` once more, so a quit keeps it as a kill would.

Before the first snapshot the worker sweeps the temporary files a killed
writer left in the data folder (``journal.sweep_temp_files``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Protocol

from dsvl_tui.core.conversation import Conversation
from dsvl_tui.core.text import error_line
from dsvl_tui.storage.journal import Journal, sweep_temp_files

# While an answer streams it is journaled (as a stopped answer) at most this often, so even
# kill -9 keeps most of it; Esc, a quit and SIGTERM/SIGHUP journal it at once.
PARTIAL_SAVE_SECONDS = 1.0


class Partial(Protocol):
    """What streams into a conversation besides its messages, to journal with every snapshot of it."""

    def amend(self, snapshot: Conversation) -> None:
        """Put what streamed so far into ``snapshot`` (a copy: its own message list), marked stopped."""

    def snapshot(self) -> Conversation | None:
        """The conversation to journal now for it (None: nothing streams any more)."""


class Autosaver:
    def __init__(self, journal: Journal | None = None, *, report: Callable[[str], None] | None = None) -> None:
        self.journal = journal or Journal()
        self.report = report  # called (from the worker) with a one-line problem, once per new problem
        self._queue: queue.SimpleQueue[tuple[Conversation, Callable[[], object] | None] | None] = queue.SimpleQueue()
        self._last_problem: str | None = None
        self._ended = threading.Event()
        self._partials: dict[str, Partial] = {}  # by conversation id

    def save(self, conversation: Conversation, then: Callable[[], object] | None = None) -> None:
        snapshot = conversation.copy()
        partial = self._partials.get(snapshot.id)
        if partial is not None:
            try:
                partial.amend(snapshot)
            except Exception:  # noqa: BLE001 - the conversation itself is journaled whatever goes wrong with the extra
                snapshot = conversation.copy()
        self._queue.put((snapshot, then))

    def streaming(self, conversation_id: str, partial: Partial | None, *, was: Partial | None = None) -> None:
        """Journal ``partial`` with every snapshot of conversation ``conversation_id`` from now on (None: no more;
        ``was``: only if that is the one registered, so an older one's end never takes a newer one away)."""
        if was is not None and self._partials.get(conversation_id) is not was:
            return
        if partial is None:
            self._partials.pop(conversation_id, None)
        else:
            self._partials[conversation_id] = partial

    def stop(self) -> None:
        """Journal once more what still streams (as stopped), then end the worker once the queue is written."""
        for partial in list(self._partials.values()):
            try:
                snapshot = partial.snapshot()
            except Exception:  # noqa: BLE001 - its last checkpoint is on disk already
                snapshot = None
            if snapshot is not None:
                self.save(snapshot)
        self._queue.put(None)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the worker has written what was queued before ``stop()``; False on timeout."""
        return self._ended.wait(timeout)

    def run(self) -> None:
        """The worker's body: write snapshots until ``stop()``."""
        try:
            sweep_temp_files()  # the data folder's, whatever the journal's folder
            while (item := self._queue.get()) is not None:
                conversation, then = item
                try:
                    problem = self.journal.record(conversation, index=False)
                except Exception as exc:  # noqa: BLE001 - a bug in one write must not stop every later one
                    problem = f"autosave failed: {error_line(exc)}"
                if problem and problem != self._last_problem and self.report is not None:
                    _call(self.report, problem)
                self._last_problem = problem
                if then is not None:
                    _call(then)
                if self._queue.empty():
                    self.journal.update_index()
            self.journal.update_index()
        finally:
            self._ended.set()


def _call(callback: Callable[..., object], *args: str) -> None:
    """Call back into the app; a closing app's refusal must not end the worker."""
    try:
        callback(*args)
    except Exception:  # noqa: BLE001 - the app may be gone (shutting down); the next snapshot still matters
        pass
