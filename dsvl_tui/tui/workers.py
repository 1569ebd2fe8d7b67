"""Model loading and answer generation for the TUI, off the event loop.

The thread bodies here (``load_model``, ``generate_answer``, ``measure_context``)
run in Textual thread workers and report only by posting messages (defined
here, handled by the app), so they hold no widget and are easy to test. The
``AnswerQueue`` is the one line of answers across all panes: one generation
at a time, the others wait their turn, visibly.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textual.message import Message

from dsvl_tui.core.conversation import ChatMessage, Conversation
from dsvl_tui.core.text import error_line

if TYPE_CHECKING:
    from dsvl_tui.backends.remote_probe import Connection
    from dsvl_tui.core.options import Options
    from dsvl_tui.tui.widgets import AssistantMessage, ChatPane
    from engine.types import ChatBackend, GenerationStats, PreparesPrompts

Post = Callable[[Message], Any]
_job_ids = itertools.count(1)


@dataclass(eq=False)
class Job:
    """One answer to generate for one pane's conversation."""

    pane: ChatPane
    conversation: Conversation
    asked: ChatMessage  # the user message answered; the answer is dropped if it is gone
    cancel: threading.Event = field(default_factory=threading.Event)
    id: int = field(default_factory=lambda: next(_job_ids))
    started: bool = False
    widget: AssistantMessage | None = None  # where the answer streams to
    streamed: list[str] = field(default_factory=list)  # all the text so far (worker thread appends)
    stream: object | None = None  # the backend's stream, once generation starts
    _buffer: list[str] = field(default_factory=list)
    _signalled: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def push(self, chunk: str) -> bool:
        """Add streamed text (worker thread); True if the UI must be told (it was not already)."""
        with self._lock:
            self._buffer.append(chunk)
            self.streamed.append(chunk)
            told, self._signalled = self._signalled, True
        return not told

    def generated(self) -> int:
        """Tokens generated so far: the stream's own count where it keeps one, else one per chunk."""
        ids = getattr(self.stream, "token_ids", None)
        return len(ids) if isinstance(ids, list) else len(self.streamed)

    def partial(self) -> Conversation | None:
        """The conversation with the answer so far as a stopped answer, to journal; None once
        ``asked`` is no longer its last message (undone, or the answer already added)."""
        messages = self.conversation.messages
        if not messages or messages[-1] is not self.asked:
            return None
        with self._lock:
            text = "".join(self.streamed)
        return self.conversation.with_partial_answer(text)

    def take(self) -> str:
        """Everything streamed since the last call (UI thread)."""
        with self._lock:
            text = "".join(self._buffer)
            self._buffer.clear()
            self._signalled = False
        return text


class AnswerQueue:
    """Answers waiting for the model, in the order asked; at most one runs."""

    def __init__(self) -> None:
        self.waiting: deque[Job] = deque()
        self.running: Job | None = None

    def add(self, job: Job) -> None:
        self.waiting.append(job)

    def next(self) -> Job | None:
        """The job to start now, if nothing runs and one waits (it becomes the running one)."""
        if self.running is not None or not self.waiting:
            return None
        self.running = self.waiting.popleft()
        self.running.started = True
        return self.running

    def finished(self, job: Job) -> None:
        if self.running is job:
            self.running = None

    def for_pane(self, pane: ChatPane) -> Job | None:
        """The running or waiting job of ``pane``."""
        if self.running is not None and self.running.pane is pane:
            return self.running
        return next((job for job in self.waiting if job.pane is pane), None)

    def withdraw(self, job: Job) -> bool:
        """Take a waiting job out of the line; False if it is not waiting."""
        try:
            self.waiting.remove(job)
        except ValueError:
            return False
        return True

    def position(self, job: Job) -> int:
        """0 for the running job, 1 for the first waiting, and so on."""
        if job is self.running:
            return 0
        return list(self.waiting).index(job) + 1 if job in self.waiting else -1

    def __len__(self) -> int:
        return len(self.waiting) + (self.running is not None)


# -- messages posted by the thread workers ------------------------------------


@dataclass
class ModelProgress(Message):
    load_id: int
    stage: str
    done: int
    total: int | None
    text: str


@dataclass
class ModelLoaded(Message):
    load_id: int
    engine: ChatBackend


@dataclass
class ModelFailed(Message):
    load_id: int
    error: str


@dataclass
class ConnectionChanged(Message):
    """``remote_probe.watch`` tried the model server of load ``load_id`` again (``--endpoint``)."""

    load_id: int
    connection: Connection


@dataclass
class AnswerChunk(Message):
    """New text is waiting in ``job`` (posted once until the UI takes it, so chunks coalesce
    whenever the UI is slower than the model)."""

    job: Job


@dataclass
class AnswerDone(Message):
    job: Job
    text: str
    stats: GenerationStats | None
    stopped: bool
    error: str | None
    rejected: bool = False  # the backend refused the input (a bad image, too long): nothing was generated


@dataclass
class ContextMeasured(Message):
    conversation: Conversation
    tokens: int | None


# -- thread bodies ---------------------------------------------------------------


def load_model(load_id: int, model: str, options: Options, post: Post,
               loader: Callable[..., ChatBackend] | None = None) -> None:
    """Load ``model`` and post its progress, then ``ModelLoaded`` or ``ModelFailed``."""
    from dsvl_tui.backends.choose import load_backend

    def progress(event: Any) -> None:
        post(ModelProgress(load_id, getattr(event, "stage", ""), getattr(event, "done", 0),
                           getattr(event, "total", None), getattr(event, "message", "") or str(event)))

    try:
        loaded = load_backend(options, model, progress, loader=loader)
    except Exception as exc:  # noqa: BLE001 - offline, bad folder, out of memory, a bug: all shown in the app
        post(ModelFailed(load_id, error_line(exc)))
    else:
        post(ModelLoaded(load_id, loaded))


def generate_answer(backend: ChatBackend, job: Job, post: Post, checkpoint: Callable[[Conversation], None] | None = None,
                  every: float = 1.0) -> None:
    """Generate ``job``'s answer on ``backend``, posting ``AnswerChunk``s and one ``AnswerDone``.

    ``checkpoint`` (autosave) gets the conversation with the answer so far at
    most once per ``every`` seconds, so a kill loses at most that much.
    """
    parts: list[str] = []
    stats: GenerationStats | None = None
    error = None
    conversation = job.conversation
    try:
        # One KV cache per conversation: the next turn prefills only what changed.
        stream = backend.stream(conversation.engine_messages(), conversation.settings,
                                system=conversation.system, cancel=job.cancel, cache_key=conversation.id)
    except Exception as exc:  # noqa: BLE001 - raised before any compute: the input is at fault
        post(AnswerDone(job, "", None, False, error_line(exc), rejected=True))
        return
    from dsvl_tui.backends.choose import note_backend

    note_backend(conversation, backend)  # which server and model answer (--endpoint), for the transcript
    job.stream = stream
    try:
        stats = getattr(stream, "stats", None)
        saved = time.monotonic()
        for chunk in stream:
            parts.append(chunk)
            if job.push(chunk):
                post(AnswerChunk(job))
            if checkpoint is not None and time.monotonic() - saved >= every:
                saved = time.monotonic()
                if (snapshot := job.partial()) is not None:
                    checkpoint(snapshot)
        stats = getattr(stream, "stats", stats)
    except Exception as exc:  # noqa: BLE001 - bad image, out of memory, a bug: shown in the pane
        error = error_line(exc)
    stopped = job.cancel.is_set() or getattr(stats, "stop_reason", None) == "cancelled"
    post(AnswerDone(job, "".join(parts), stats, stopped and error is None, error))


def measure_context(backend: PreparesPrompts, conversation: Conversation, post: Post) -> None:
    """Post how many tokens ``conversation`` takes (``None`` if it cannot be measured)."""
    messages = conversation.engine_messages()
    tokens: int | None = 0
    if messages:
        try:
            tokens = len(backend.prepare(messages, system=conversation.system).input_ids)
        except Exception:  # noqa: BLE001 - a meter must never break the app
            tokens = None
    post(ContextMeasured(conversation, tokens))
