"""The stream a caller iterates: text chunks in, as a scheduler produces them; ``stats`` final at the end.

A ``TextStream`` runs nothing itself. Iterating it the first time hands it
to the engine's runner (``batch.Scheduler``, or ``batch.OneAtATime``), which
decodes and pushes text with ``emit`` and ends it with ``end``. A cancel
event (or leaving the loop early, or ``close``) is read by the runner at
every step, so generation stops within one token and keeps what was
produced. Also here: the one line a failed generation ends with, and the
long-lived ``Worker`` thread compiled decoding runs on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import torch

from .errors import EngineError, GenerationError
from .types import GenerationStats

_DONE = object()
# torch.OutOfMemoryError is new in torch 2.5; older releases only have the CUDA one.
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def release_cached_memory() -> None:
    """After running out of GPU memory: free what the failed work left and hand torch's cached blocks back.

    The next turn (or another program) then finds the memory free rather
    than held in torch's cache; a no-op where CUDA was never used.
    """
    import gc

    gc.collect()  # tensors of the failed turn may sit in reference cycles (frames, closures)
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def failure_message(exc: BaseException) -> str:
    """The one line a stream ends with when generating raised ``exc``."""
    if isinstance(exc, EngineError):
        return str(exc)
    if isinstance(exc, OUT_OF_MEMORY):
        return "out of GPU memory while generating; start a new conversation, shorten it, or load a smaller model"
    return f"generation failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


class TextStream:
    """Iterate to get text chunks; ``stats`` is complete once iteration ends.

    Errors while generating end the iteration with a ``GenerationError``
    after the text produced so far. Leaving the loop early (``break``) or
    calling ``close()`` cancels the generation.
    """

    def __init__(self, submit: Callable[[TextStream], None], cancel: threading.Event | None = None):
        self.stats = GenerationStats()
        self._chunks: list[str] = []
        self.token_ids: list[int] = []  # generated ids, EOS excluded
        self.cancel = cancel if cancel is not None else threading.Event()
        self._abort = threading.Event()  # set when the caller stops iterating early
        self._queue: queue.Queue = queue.Queue()
        self._submit = submit  # hands the stream to the runner that produces it
        self._finished = threading.Event()
        self._started = False

    # -- the runner's side ---------------------------------------------------------
    def emit(self, chunk: str) -> None:
        if chunk:
            self._chunks.append(chunk)
            self._queue.put(chunk)

    def cancelled(self) -> bool:
        return self.cancel.is_set() or self._abort.is_set()

    def end(self, error: str | None = None) -> None:
        """The runner is done with this stream: ``error`` set fails it, else ``stats`` are final."""
        if error is not None:
            self.stats.stop_reason = "error"
            self.stats.error = error
        self._queue.put(_DONE)
        self._finished.set()

    # -- the caller's side ---------------------------------------------------------
    @property
    def text(self) -> str:
        """Everything streamed so far."""
        return "".join(self._chunks)

    def __iter__(self) -> Iterator[str]:
        if not self._started:
            self._started = True
            self._submit(self)
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    break
                yield item
        finally:
            self._abort.set()  # a no-op if the runner already finished
            self._finished.wait()
        if self.stats.stop_reason == "error":
            raise GenerationError(self.stats.error or "generation failed")

    def close(self) -> None:
        """Stop the generation (if running) and wait for the runner to end it."""
        self._abort.set()
        if self._started:
            self._finished.wait()


class Worker:
    """One long-lived thread that runs the calls given to it, in order.

    For the compiled decode step: torch keeps recorded CUDA graphs per
    thread, so its warm-up and every generation must run on the same
    thread, or each turn would record them again (and hold more memory).
    """

    def __init__(self, name: str):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            try:
                call()
            except BaseException:  # noqa: BLE001 - calls report their own errors; the thread must outlive them
                pass
            # Else the last call (a stream, and through it the engine) stays referenced while the thread waits.
            del call

    def submit(self, call: Callable[[], None]) -> None:
        self._calls.put(call)

    def call(self, function: Callable[[], object]) -> object:
        """Run ``function`` on the thread and return its result (or raise its exception) here."""
        done = threading.Event()
        outcome: list = []

        def run() -> None:
            try:
                outcome.append((True, function()))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                outcome.append((False, exc))
            finally:
                done.set()

        self.submit(run)
        done.wait()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        """End the thread once the calls already given have run."""
        self._calls.put(None)
