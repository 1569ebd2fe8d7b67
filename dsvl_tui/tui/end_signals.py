"""SIGTERM and SIGHUP (a closed terminal) end the app as Ctrl+Q does: each answer so far is journaled as stopped.

``EndSignals.catch`` installs the handlers on the app's event loop (where
there is one: not on Windows, not off the main thread); ``release`` puts back
the handlers that were there before.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

# Signals that end the app the way Ctrl+Q does (the answers being generated are journaled as stopped).
END_SIGNALS = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]


class EndSignals:
    """The app's handlers of ``END_SIGNALS``: ``end(number)`` runs on the event loop when one arrives."""

    def __init__(self, end: Callable[[int], None]) -> None:
        self._end = end
        self._before: list[tuple[int, Any]] = []  # (signal, the handler before ours)

    def catch(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            for number in END_SIGNALS:
                previous = signal.getsignal(number)
                loop.add_signal_handler(number, self._end, number)
                self._before.append((number, previous))
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
            pass

    def release(self) -> None:
        with contextlib.suppress(RuntimeError, ValueError):
            loop = asyncio.get_running_loop()
            for number, previous in self._before:
                loop.remove_signal_handler(number)
                signal.signal(number, previous)
        self._before.clear()
