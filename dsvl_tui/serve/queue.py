"""Admission control: a bounded first-come-first-served queue in front of the engine.

The engine decodes up to ``max_batch`` answers together (``Engine.max_batch``;
1 is one at a time). ``GenerationQueue.acquire`` gives the caller one of
those places (a ``Slot``) when one is free and every earlier request has
had one, or raises ``QueueFull`` at once when ``size`` requests are already
waiting (the server answers 503 with Retry-After). A waiter that is cancelled (its
client left) leaves the queue. ``Pump`` runs one answer's ``TextStream`` on
a thread and hands its chunks to the event loop; the slot is released when
the engine has really finished (so a cancelled answer frees the engine
within one token, and the next request does not wait on the engine lock).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from engine.errors import GenerationError


class QueueFull(Exception):
    """Every place in the queue is taken."""


class GenerationQueue:
    """FIFO access to one engine: ``places`` requests run at once, at most ``size`` wait behind them."""

    def __init__(self, size: int, places: int = 1):
        if places < 1:
            raise ValueError(f"places must be at least 1, not {places}")
        self.size = size
        self.places = places
        self.running = 0  # places taken
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def busy(self) -> bool:
        return self.running > 0

    @property
    def waiting(self) -> int:
        return sum(not future.done() for future in self._waiters)

    async def acquire(self) -> Slot:
        """A place on the engine, once one is free for it in arrival order; ``QueueFull`` if none can wait."""
        loop = asyncio.get_running_loop()
        if self.running < self.places and not self.waiting:
            self.running += 1
            return Slot(self, loop)
        if self.waiting >= self.size:
            raise QueueFull
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future in self._waiters:
                self._waiters.remove(future)
            elif future.done() and not future.cancelled():  # handed the engine as it was cancelled: pass it on
                self._next()
            raise
        return Slot(self, loop)

    def _next(self) -> None:
        """Hand a freed place to the first waiter still waiting, or mark it free (on the loop's thread)."""
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.running -= 1


class Slot:
    """A place on the engine, held by one request until ``release`` (from any thread; only the first call counts)."""

    def __init__(self, queue: GenerationQueue, loop: asyncio.AbstractEventLoop):
        self._queue = queue
        self._loop = loop
        self._lock = threading.Lock()
        self._released = False

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._queue._next()
        else:
            try:
                self._loop.call_soon_threadsafe(self._queue._next)
            except RuntimeError:  # the loop is closed: the server is gone
                pass


_END = object()


class Pump:
    """Runs an answer stream on a thread; ``chunks()`` yields its text on the event loop.

    ``error`` holds the generation's failure message, if it failed. ``close``
    cancels it (the engine stops within one token); the slot is released
    when the stream has ended, or at once if it never started.
    """

    def __init__(self, stream: Any, cancel: threading.Event, slot: Slot):
        self.stream = stream
        self.cancel = cancel
        self.error: str | None = None
        self._slot = slot
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._lock = threading.Lock()
        self._started = False
        self._closed = False

    def start(self) -> None:
        with self._lock:
            if self._closed or self._started:
                return
            self._started = True
        threading.Thread(target=self._run, name="dsvl-serve-pump", daemon=True).start()

    def _run(self) -> None:
        try:
            for chunk in self.stream:
                self._put(chunk)
        except GenerationError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure must end the answer, not leave the client waiting
            self.error = f"generation failed: {type(exc).__name__}: {exc}"
        finally:
            # The engine is free once the stream has ended: release first, while the loop still waits for _END.
            self._slot.release()
            self._put(_END)

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed
            self.cancel.set()

    async def chunks(self) -> AsyncIterator[str]:
        self.start()
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            yield item

    def close(self) -> None:
        """Cancel the answer (idempotent); the engine is freed when it has stopped."""
        self.cancel.set()
        with self._lock:
            self._closed = True
            started = self._started
        if not started:
            self._slot.release()


__all__ = ["GenerationQueue", "Pump", "QueueFull", "Slot"]
