"""One answer as a server streams it: ``RemoteStream``, read by a thread, bounded and checked.

``RemoteBackend.stream`` (in ``remote``) returns one. What the server sends
is untrusted: the lines are bounded and each event checked by
``remote_events``; the answer stops at ``max_new_tokens`` whatever the
server does; anything going wrong in the reading thread ends the answer with
its text kept.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx

from dsvl_tui.backends.remote_events import (
    MAX_LINE_BYTES,
    LineTooLong,
    Notes,
    RemoteError,
    RemoteStreamError,
    bounded_lines,
    parse_event,
    reason,
)
from engine.types import GenerationStats, StopReason

if TYPE_CHECKING:
    from dsvl_tui.backends.remote import RemoteBackend
    from engine.types import AnswerStream

__all__ = ["ERROR_BYTES", "MAX_CHARS_PER_TOKEN", "RemoteStream", "head"]

_POLL_SECONDS = 0.05  # how often a reader waiting for the server looks at ``cancel``
# The most characters one token of any model's vocabulary decodes to (the longest are runs of spaces or
# punctuation, a few dozen characters): an answer longer than max_new_tokens times this is cut there.
MAX_CHARS_PER_TOKEN = 128
_EXTRA_EVENTS = 16  # events beside one per token: the role, the finish reason, the usage
# Text events beside one per token: a server that holds text back while it might be a stop string sends the
# held tail as one more (dsvl-chat serve does).
_TAIL_DELTAS = 1
_QUEUED_LINES = 64  # lines read ahead of the reader: a fast server cannot fill memory
ERROR_BYTES = 64 * 2**10  # of an error body: its message is shown cut to one line anyway
_FINISH: dict[str, StopReason] = {"stop": "eos", "length": "length", "cancelled": "cancelled", "abort": "cancelled"}


class RemoteStream:
    """The text of one answer as the server streams it; ``stats`` are final when iteration ends.

    A thread reads the response and hands each line over through a small
    queue, so the reader waits on the queue, not on the socket: setting
    ``cancel`` ends the iteration at once even while the server is silent (a
    request waiting in its queue, a long prefill). The thread then closes the
    connection when the server next writes, which tells the server to stop
    generating.

    What the server sends is untrusted (see ``remote_events``): a line longer
    than ``MAX_LINE_BYTES``, or anything at all going wrong in the thread
    (``MemoryError`` included), ends the answer as a ``RemoteStreamError``
    after the text so far; a field that is not valid is dropped and said once
    in ``notes``. The answer stops at ``max_new_tokens``, counted by the
    server's text events (one per token, and one more for a held-back tail),
    by ``MAX_CHARS_PER_TOKEN`` characters a token and by its events of any
    kind, whatever the server does: the request is then cancelled, as by
    ``cancel``, and the answer's stop reason is ``length``.
    """

    def __init__(self, backend: RemoteBackend, request: httpx.Request, cancel: Any, start: float,
                 max_new_tokens: int) -> None:
        self._cancel = cancel
        self._start = start
        self._endpoint = backend.where  # its address, or "the model server" (dsvl-chat web)
        self._max_tokens = max_new_tokens
        self._events: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=_QUEUED_LINES)
        self._abandon = threading.Event()  # the reader is gone: the thread closes the response
        self._opened = False
        self.stats = GenerationStats()
        self.notes: list[str] = []
        """One line for each kind of thing the server sent that was dropped or cut (see ``remote_events``)."""
        self._thread = threading.Thread(target=self._pump, args=(backend, request), daemon=True,
                                        name="dsvl-remote-stream")
        self._thread.start()

    def _put(self, event: tuple[str, str]) -> bool:
        """Queue ``event`` for the reader, waiting while the queue is full; False once the reader is gone."""
        while not self._abandon.is_set():
            try:
                self._events.put(event, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self, backend: RemoteBackend, request: httpx.Request) -> None:
        """The thread: send the request, then put each line of the response on the queue.

        It always ends with one last event ("end", "refused" or "broken"), whatever it meets.
        """
        try:
            self._read(backend, request)
        except BaseException as exc:  # noqa: BLE001 - MemoryError, a bug: the answer ends, the text so far kept
            try:
                self._put(("broken", f"reading the answer from {self._endpoint} failed ({type(exc).__name__})"))
            except BaseException:  # noqa: BLE001 - no memory even for that: the reader sees the thread gone
                pass

    def _read(self, backend: RemoteBackend, request: httpx.Request) -> None:
        try:
            response = backend._send(request, stream=True)
        except RemoteError as exc:
            self._put(("refused", str(exc)))
            return
        try:
            if response.status_code >= 400:
                self._put(("refused", backend._http_error(response, head(response, ERROR_BYTES))))
                return
            self._put(("open", ""))
            for line in bounded_lines(response.iter_bytes(), MAX_LINE_BYTES):
                if not self._put(("line", line)):
                    return
            self._put(("end", ""))
        except LineTooLong:
            self._put(("broken", f"{self._endpoint} sent a line longer than {MAX_LINE_BYTES >> 20} MiB; "
                                 "is it an OpenAI-compatible server?"))
        except httpx.TimeoutException:
            self._put(("broken", f"{self._endpoint} stopped sending the answer (timed out)"))
        except httpx.HTTPError as exc:
            self._put(("broken", f"the connection to {self._endpoint} broke: {reason(exc)}"))
        finally:
            response.close()

    def _next(self) -> tuple[str, str] | None:
        """The thread's next event, or None as soon as ``cancel`` is set."""
        while not self._cancelled():
            try:
                return self._events.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not self._thread.is_alive():  # it ended without a last event (it ran out of memory)
                    try:
                        return self._events.get_nowait()
                    except queue.Empty:
                        return "broken", f"reading the answer from {self._endpoint} failed"
        return None

    def wait_open(self) -> None:
        """Wait for the server to accept the request (or for ``cancel``); raises ``RemoteError`` if it does not."""
        event = self._next()
        if event is None:
            self._abandon.set()
            return
        kind, value = event
        if kind in ("refused", "broken"):
            self._abandon.set()
            raise RemoteError(value)
        self._opened = True

    def __iter__(self) -> Iterator[str]:
        stats, notes = self.stats, Notes()
        first: float | None = None
        chunks = events = chars = 0
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        finish: str | None = None
        done = overrun = False
        max_chars = self._max_tokens * MAX_CHARS_PER_TOKEN
        try:
            while self._opened:
                event = self._next()
                if event is None:
                    finish = "cancelled"
                    break
                kind, line = event
                if kind == "broken":
                    raise RemoteStreamError(line)
                if kind == "end":
                    break
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    done = True
                    break
                events += 1
                if events > self._max_tokens + _EXTRA_EVENTS:  # an endless stream of events without text
                    overrun = True
                    break
                parsed = parse_event(data, notes)
                if parsed.error is not None:
                    raise RemoteStreamError(f"{self._endpoint}: {parsed.error}")
                prompt_tokens = parsed.prompt_tokens if parsed.prompt_tokens is not None else prompt_tokens
                completion_tokens = parsed.completion_tokens if parsed.completion_tokens is not None \
                    else completion_tokens
                finish = parsed.finish or finish
                for text in parsed.texts:
                    room = max_chars - chars
                    if chunks >= self._max_tokens + _TAIL_DELTAS or room <= 0:
                        overrun = True
                        break
                    if len(text) > room:  # more characters than max_new_tokens of any tokenizer's tokens
                        text, overrun = text[:room], True
                    chars += len(text)
                    if first is None:
                        first = time.monotonic()
                        stats.time_to_first_token = first - self._start
                    chunks += 1
                    yield text
                    if self._cancelled():
                        finish = "cancelled"
                        return
                    if overrun:
                        break
                if overrun:
                    break
            if overrun:
                notes.add(f"{self._endpoint} went on past max_new_tokens ({self._max_tokens}); the answer stops there")
                finish = "length"
            elif self._opened and not done and finish is None and not self._cancelled():
                raise RemoteStreamError(f"{self._endpoint} closed the stream before the answer ended")
        finally:
            self._abandon.set()  # the thread closes the connection: the server stops generating
            end = time.monotonic()
            stats.total_seconds = end - self._start
            stats.prompt_tokens = prompt_tokens or 0
            if completion_tokens is not None and completion_tokens > self._max_tokens:
                notes.add(f"{self._endpoint} counted {completion_tokens} new tokens, more than max_new_tokens "
                          f"({self._max_tokens}); its count was dropped")
                completion_tokens = None
            counted = completion_tokens is not None and finish != "cancelled" and not overrun
            stats.new_tokens = completion_tokens if counted and completion_tokens is not None else chunks
            if overrun:  # a held-back tail is not a token more than it was asked for
                stats.new_tokens = min(stats.new_tokens, self._max_tokens)
            if first is not None and stats.new_tokens > 1 and end > first:
                stats.tokens_per_second = (stats.new_tokens - 1) / (end - first)
            stats.stop_reason = _FINISH.get(finish or "", "eos" if finish is None else "stop_string")
            if self._cancelled():
                stats.stop_reason = "cancelled"
            self.notes[:] = notes.lines

    def _cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()

    @property
    def token_ids(self) -> tuple[int, ...]:
        """None known: a server sends text, not ids (``AnswerStream.token_ids``)."""
        return ()

    def close(self) -> None:
        """Stop reading the answer: the thread closes the connection when the server next writes, which stops
        its generation. Iteration ends on its own when it sees ``cancel``; this is for a reader that leaves."""
        self._abandon.set()


if TYPE_CHECKING:  # mypy checks here that a RemoteStream is what every front end reads (engine.types)
    def _is_an_answer_stream(stream: RemoteStream) -> AnswerStream:
        return stream


def head(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of a response's body (an error page, a model list): a server may send any amount."""
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > limit:
            break
    return bytes(data)
