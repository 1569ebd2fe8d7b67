"""One turn: the conversation's last question answered by a backend, start to end.

Every front end runs its answers with ``Turn`` (the app's thread worker in
``tui.workers``, the REPL, ``ask``), so an answer is asked for, streamed and
recorded the same way whichever one runs it::

    turn = Turn(conversation, cancel=cancel)
    turn.open(backend)           # raises if the backend refuses the input: nothing is recorded
    for event in turn.events():  # Delta(text)..., then one ending: Done, Cancelled or Failed
        ...
    answer = turn.record()       # the answer, appended to the conversation however the turn ended

``open`` sends the conversation (one KV cache per conversation: ``cache_key``
is its id, so the next turn prefills only what changed). A backend refuses
input it cannot take (a bad image, a turn too long for the context window,
a server that cannot be reached) by raising before anything is generated;
the question then stays unanswered and the front end gives it back to edit.

``events`` yields each text chunk as a ``Delta``, then one ending: ``Done``
(the stream ended by itself), ``Cancelled`` (``cancel`` was set: the answer
so far is kept, marked stopped) or ``Failed`` (the stream broke part way:
the text so far is kept with the error line). A ``KeyboardInterrupt`` (``ask``'s
Ctrl+C) cancels the turn and propagates; ``record`` then keeps the answer so
far as stopped.

``record`` runs on the thread that owns the conversation (the app's event
loop, the REPL's thread) and appends the answer only while the question is
still the conversation's last message: a command that removed it meanwhile
(``/undo``, ``/clear``) drops the answer. ``partial`` is the conversation with
the answer so far as a stopped answer, for a journal write while the answer
streams (``checkpoint`` gets one at most every ``every`` seconds), so a
kill loses at most that much.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from dsvl_tui.core.conversation import ChatMessage, Conversation
from dsvl_tui.core.text import error_line
from engine.errors import GenerationError
from engine.types import LAYOUTS, GenerationStats

if TYPE_CHECKING:
    from engine.types import AnswerStream, ChatBackend

__all__ = ["Cancelled", "Delta", "Done", "Ending", "Event", "Failed", "Turn", "note_backend", "stream_answer"]


@dataclass(frozen=True)
class Delta:
    """Text the model added."""

    text: str


@dataclass(frozen=True)
class Done:
    """The answer ended by itself (end of sequence, a stop string, max_new_tokens)."""

    text: str
    stats: GenerationStats


@dataclass(frozen=True)
class Cancelled:
    """The answer was stopped (``cancel``); ``text`` is what came before, kept as a stopped answer."""

    text: str
    stats: GenerationStats


@dataclass(frozen=True)
class Failed:
    """The answer broke part way (out of memory, a dropped connection): ``error`` is one line, ``text`` kept."""

    error: str
    text: str
    stats: GenerationStats


Ending = Done | Cancelled | Failed
Event = Delta | Done | Cancelled | Failed


@runtime_checkable
class _Noted(Protocol):
    """A stream with lines about what it dropped or cut (``RemoteStream.notes``: a server's invalid fields)."""

    notes: list[str]


def note_backend(conversation: Conversation, backend: ChatBackend) -> None:
    """Record in ``conversation`` what answers it: the server (``RemoteBackend.endpoint``, no credentials; none
    for ``dsvl-chat web``'s internal one) and its model, or no endpoint for a local model, its quantization and
    its checkpoint layout. Called once the backend has accepted the request."""
    remote = getattr(backend, "remote", False) is True
    endpoint = getattr(backend, "endpoint", "")
    conversation.endpoint = endpoint if remote and isinstance(endpoint, str) else ""
    quantize = getattr(getattr(backend, "info", None), "quantize", "none")  # a stand-in backend may lack them
    conversation.quantize = quantize if isinstance(quantize, str) and not remote else "none"
    layout = getattr(getattr(backend, "info", None), "layout", "")  # a server's is not known
    conversation.layout = layout if isinstance(layout, str) and layout in LAYOUTS and not remote else ""
    if remote and backend.info.model_id:
        conversation.model = backend.info.model_id


class Turn:
    """One answer to ``asked`` (default: the conversation's last message, the question just added)."""

    def __init__(self, conversation: Conversation, *, asked: ChatMessage | None = None,
                 cancel: threading.Event | None = None,
                 checkpoint: Callable[[Conversation], None] | None = None, every: float = 1.0) -> None:
        if asked is None:
            if not conversation.messages:
                raise ValueError("a turn answers a question: the conversation has none")
            asked = conversation.messages[-1]
        self.conversation = conversation
        self.asked = asked
        self.cancel = cancel if cancel is not None else threading.Event()
        self.stream: AnswerStream | None = None  # once ``open`` has been accepted
        self.ending: Ending | None = None  # once ``events`` has ended
        self.notes: list[str] = []  # what the backend dropped or cut, once the stream has ended
        self._checkpoint = checkpoint
        self._every = every
        self._parts: list[str] = []  # the worker thread appends; others read under the lock
        self._lock = threading.Lock()
        self.refused = False  # ``open`` raised: the question was never sent
        self._recorded = False

    # -- the worker's side -------------------------------------------------------------------------

    def open(self, backend: ChatBackend) -> None:
        """Send the conversation to ``backend``; raises (nothing recorded) if it refuses the input."""
        conversation = self.conversation
        try:
            self.stream = backend.stream(conversation.engine_messages(), conversation.settings,
                                         system=conversation.system, cancel=self.cancel, cache_key=conversation.id)
        except BaseException:
            self.refused = True
            raise
        note_backend(conversation, backend)  # which server and model answer (--endpoint), for the transcript

    def events(self) -> Generator[Event, None, None]:
        """The answer's text as it comes (``Delta``s), then how it ended (``self.ending``)."""
        stream = self.stream
        if stream is None:
            raise RuntimeError("Turn.events() before open()")
        chunks = iter(stream)
        saved = time.monotonic()
        ending: Ending | None = None
        try:
            for chunk in chunks:
                with self._lock:
                    self._parts.append(chunk)
                yield Delta(chunk)
                if self._checkpoint is not None and time.monotonic() - saved >= self._every:
                    saved = time.monotonic()
                    if (snapshot := self.partial()) is not None:
                        self._checkpoint(snapshot)
        except GenerationError as exc:  # the backend's own words: an answer that broke part way
            ending = Failed(str(exc), self.text, stream.stats)
        except Exception as exc:  # noqa: BLE001 - out of memory, a bug: the text so far is kept with the error
            ending = Failed(error_line(exc), self.text, stream.stats)
        except BaseException:  # Ctrl+C (ask), or the consumer left: the turn is stopped there
            self.cancel.set()
            raise
        finally:
            if isinstance(chunks, Generator):
                chunks.close()  # the stream's own ending runs now (its stats final), not when collected
            stream.close()  # waits for the engine's worker: the stats are final
            if isinstance(stream, _Noted):
                self.notes = list(stream.notes)
        if ending is None:
            stopped = self.cancel.is_set() or stream.stats.stop_reason == "cancelled"
            ending = Cancelled(self.text, stream.stats) if stopped else Done(self.text, stream.stats)
        self.ending = ending
        yield ending

    # -- any thread ------------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The answer so far."""
        with self._lock:
            return "".join(self._parts)

    @property
    def chunks(self) -> list[str]:
        """The answer so far, as it came (a copy)."""
        with self._lock:
            return list(self._parts)

    def generated(self) -> int:
        """Tokens generated so far: the stream's own count of ids, else (a server sends text) one per chunk."""
        if self.stream is not None and self.stream.token_ids:
            return len(self.stream.token_ids)
        with self._lock:
            return len(self._parts)

    def answering(self) -> bool:
        """Whether ``asked`` is still the conversation's last message (not undone, not answered yet)."""
        messages = self.conversation.messages
        return bool(messages) and messages[-1] is self.asked

    def partial(self) -> Conversation | None:
        """The conversation with the answer so far as a stopped answer, to journal; None once the question is
        no longer its last message."""
        if not self.answering():
            return None
        return self.conversation.with_partial_answer(self.text)

    # -- the conversation's owner ------------------------------------------------------------

    def record(self) -> ChatMessage | None:
        """Append the answer to the conversation (once), as the turn ended: complete, stopped (also when it
        never ended: Ctrl+C, the consumer left, or stopped before it started: an empty stopped answer) or
        failed with the text so far. None if the question is gone or the backend refused it (``open`` raised)."""
        if self._recorded or self.refused or not self.answering():
            return None
        self._recorded = True
        ending = self.ending
        if isinstance(ending, Failed):
            return self.conversation.add_answer(ending.text, ending.stats, error=ending.error)
        if isinstance(ending, Done):
            return self.conversation.add_answer(ending.text, ending.stats)
        stats = self.stream.stats if self.stream is not None else None
        return self.conversation.add_answer(self.text, stats, stopped=True)


def stream_answer(backend: ChatBackend, conversation: Conversation, *, cancel: threading.Event,
                  on_chunk: Callable[[str], None], on_note: Callable[[str], None] | None = None,
                  on_open: Callable[[], None] | None = None,
                  checkpoint: Callable[[Conversation], None] | None = None, every: float = 1.0) -> ChatMessage:
    """A ``Turn`` for the line front ends (the REPL, ``ask``): answer the conversation's last user message,
    each chunk to ``on_chunk``; returns the answer it appended.

    Raises what ``Turn.open`` raises (nothing recorded). ``on_open`` is called once the backend has accepted
    the request (the REPL journals the question then: one the backend refused was never sent). ``on_note``
    gets, when the stream has ended, each line the backend has about what it dropped or cut. On Ctrl+C the
    answer so far is recorded as stopped and ``KeyboardInterrupt`` propagates.
    """
    turn = Turn(conversation, cancel=cancel, checkpoint=checkpoint, every=every)
    turn.open(backend)
    if on_open is not None:
        on_open()
    events = turn.events()
    try:
        for event in events:
            if isinstance(event, Delta):
                on_chunk(event.text)
    finally:
        events.close()  # Ctrl+C in ``on_chunk`` stops the turn too (its stream closed: the stats final)
        answer = turn.record()
        if on_note is not None:
            for note in turn.notes:
                on_note(note)
    assert answer is not None  # the line front ends run no command while they answer
    return answer
