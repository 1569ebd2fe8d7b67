"""Autosave for the TUI: conversation snapshots journaled in order by one worker thread.

``save()`` is cheap and safe on the event loop: it queues a shallow copy of
the conversation; the worker writes the snapshots one after the other
through ``Journal.record`` (an atomic file write), so a slow disk never
blocks the interface and a later snapshot is never overwritten by an
earlier one. ``stop()`` lets the worker finish what is queued and end.
"""

from __future__ import annotations

import queue
from collections.abc import Callable

from .conversation import Conversation
from .journal import Journal


class Autosaver:
    def __init__(self, journal: Journal | None = None, *, report: Callable[[str], None] | None = None) -> None:
        self.journal = journal or Journal()
        self.report = report  # called (from the worker) with a one-line problem, once per new problem
        self._queue: queue.SimpleQueue[Conversation | None] = queue.SimpleQueue()
        self._last_problem: str | None = None

    def save(self, conversation: Conversation) -> None:
        self._queue.put(conversation.copy())

    def stop(self) -> None:
        self._queue.put(None)

    def run(self) -> None:
        """The worker's body: write snapshots until ``stop()``."""
        while (conversation := self._queue.get()) is not None:
            problem = self.journal.record(conversation)
            if problem and problem != self._last_problem and self.report is not None:
                self.report(problem)
            self._last_problem = problem
