"""The plain REPL's autosave journal, and how SIGTERM and SIGHUP end it without losing an answer.

Every change is journaled (``storage.journal``); a failure is said once and tried again at each
change. A signal ends the REPL as /quit does: an answer being generated is stopped and journaled, a
journal write under way is finished first.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from dsvl_tui.repl.load_notes import LoadNotes

if TYPE_CHECKING:
    from dsvl_tui.core.conversation import Conversation
    from dsvl_tui.storage.journal import Journal


class Journaling(LoadNotes):
    """A layer of ``app.Repl``: the journal and the end signals."""

    _journal: Journal | None  # opened at the first save
    _journal_problem: str | None  # the last autosave failure, said once
    _journaling: bool  # a journal write is under way (a SIGTERM waits for it)
    _journal_lock: threading.RLock  # one journal write at a time (the compared answer's thread writes too)
    _end_after_journal: bool  # a signal came during that write: end after it
    _cancel: threading.Event | None  # set to stop the answer being generated
    _running: bool  # False ends the loop

    def _autosave(self, snapshot: Conversation | None = None) -> None:
        """Journal the conversation (or ``snapshot`` of it, an answer so far). A failure is said once;
        every later change is tried again, and the first success after failures is said too."""
        with self._journal_lock:  # /compare's compared answer journals itself from its thread
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
