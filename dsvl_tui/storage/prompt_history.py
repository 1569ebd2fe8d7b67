"""The TUI's prompt history, kept across runs in the file the plain REPL uses.

The file (``paths.history_file()``) is prompt-toolkit's ``FileHistory``
format, read and appended through that class, so a prompt typed in either
front end is recalled in the other. One worker thread does all the file
work (as the autosave worker does): it reads the file once, hands the
prompts back, then appends the prompts queued by ``append()`` in order, so
the interface never waits on the disk. A missing, unreadable or corrupt file
gives an empty history; it never stops the app.
"""

from __future__ import annotations

import os
import queue
import stat
from collections.abc import Callable
from itertools import islice
from pathlib import Path

from dsvl_tui.core.text import printable
from engine.files import NotRegularFileError

LIMIT = 1000  # the most prompts read back at start


class PromptHistory:
    def __init__(self, path: Path | None = None, *, limit: int = LIMIT,
                 report: Callable[[str], None] | None = None) -> None:
        self.path = path  # None: ``paths.history_file()``, looked up in the worker
        self.limit = limit
        self.report = report  # called (from the worker) with a one-line problem, once
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._reported = False

    def _file(self) -> Path:
        if self.path is None:
            from dsvl_tui.storage.paths import history_file

            self.path = history_file()
        return self.path

    def load(self) -> list[str]:
        """The most recent ``limit`` prompts, oldest first; ``[]`` if the file cannot be read."""
        try:
            from prompt_toolkit.history import FileHistory

            _regular_or_absent(self._file())
            newest_first = FileHistory(str(self._file())).load_history_strings()
            prompts = [text for text in islice(newest_first, self.limit) if _usable(text)]
        except Exception:  # noqa: BLE001 - a bad history file must not stop the app
            return []
        prompts.reverse()
        return [text for index, text in enumerate(prompts) if index == 0 or prompts[index - 1] != text]

    def store(self, text: str) -> None:
        """Append one prompt to the file (blocking; the worker calls it)."""
        try:
            from prompt_toolkit.history import FileHistory

            path = self._file()
            path.parent.mkdir(parents=True, exist_ok=True)
            _regular_or_absent(path)
            FileHistory(str(path)).store_string(text)
        except Exception as exc:  # noqa: BLE001 - history is a convenience
            if not self._reported and self.report is not None:
                self.report(f"prompt history is not saved: {exc}")
            self._reported = True

    def append(self, text: str) -> None:
        """Queue a prompt for the worker to append; cheap and safe on the event loop."""
        self._queue.put(text)

    def stop(self) -> None:
        self._queue.put(None)

    def run(self, loaded: Callable[[list[str]], object]) -> None:
        """The worker's body: read the file, pass the prompts to ``loaded``, then append until ``stop()``."""
        loaded(self.load())
        while (text := self._queue.get()) is not None:
            self.store(text)


def _regular_or_absent(path: Path) -> None:
    """Refuse a history path that is a FIFO, a device or a folder: FileHistory would block on it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(path, mode)


def _usable(text: str) -> bool:
    """False for an entry that is empty, was not UTF-8 or holds control characters (a damaged file)."""
    return bool(text.strip()) and "\ufffd" not in text and printable(text) == text
