"""Is the model server there? Trying an endpoint again, with backoff, until it answers.

A front end given ``--endpoint`` gets its ``RemoteBackend`` from
``choose.load_backend``, which asks the server once (``GET /v1/models``,
within ``PROBE_TIMEOUT`` seconds, in the loading thread, never the UI's).
When that fails, the front end says "not connected" with the reason and runs
``watch`` in a thread: it tries again after 1, 2, 4, 8 and 15 seconds, then
every 30 seconds (``RETRY_SECONDS``), reporting each failure, until the
server answers (then it reports the connection and ends) or ``stop`` is set.
A message sent meanwhile is not held back: it tries the server at once and,
refused, goes back to the input with one line saying why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from dsvl_tui.backends.remote import RemoteBackend
from dsvl_tui.backends.remote_events import RemoteError

__all__ = ["PROBE_TIMEOUT", "RETRY_SECONDS", "Connection", "schedule_text", "watch"]

PROBE_TIMEOUT = 5.0  # seconds one try may take: a server that is up lists its models at once
RETRY_SECONDS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # between tries; the last one repeats


@dataclass(frozen=True)
class Connection:
    """What the last try found: connected, or not with the reason and the seconds to the next try."""

    connected: bool
    reason: str = ""
    retry_in: float | None = None


def schedule_text(schedule: tuple[float, ...] | None = None) -> str:
    """``after 1, 2, 4, 8 and 15 s, then every 30 s``: when the next tries come (``RETRY_SECONDS``)."""
    schedule = schedule or RETRY_SECONDS
    steps = [f"{seconds:g}" for seconds in schedule[:-1]]
    first = f"after {', '.join(steps[:-1])} and {steps[-1]} s, then " if len(steps) > 1 else \
        f"after {steps[0]} s, then " if steps else ""
    return f"{first}every {schedule[-1]:g} s"


def watch(backend: RemoteBackend, report: Callable[[Connection], None], stop: threading.Event, *,
          schedule: tuple[float, ...] | None = None, timeout: float = PROBE_TIMEOUT) -> bool:
    """Thread body, once the first try has failed (``backend.problem`` says why): report it, then try again
    on ``schedule`` until the server answers (True) or ``stop`` is set (False). ``report`` is called from
    this thread."""
    schedule = schedule or RETRY_SECONDS
    tries = 0
    reason = backend.problem or f"no answer from {backend.where} yet"
    while True:
        delay = schedule[min(tries, len(schedule) - 1)]
        report(Connection(False, reason, delay))
        if stop.wait(delay):
            return False
        tries += 1
        try:
            backend.refresh(timeout=timeout)
        except RemoteError as exc:
            reason = str(exc)
            continue
        if stop.is_set():
            return False
        report(Connection(True))
        return True
