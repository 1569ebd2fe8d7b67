"""Model loading and answer generation for the TUI, off the event loop.

The thread bodies here (``load_model``, ``generate_answer``, ``measure_context``)
run in threads and report only by posting messages (defined here, handled by
the app), so they hold no widget and are easy to test. ``generate_answer``
runs a ``Job``'s ``core.turn.Turn``, as every front end runs its answers. The
``AnswerQueue`` is the one line of answers across all panes: as many
generations at a time as the backend decodes together (``answer_places``),
the others wait their turn, visibly.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from textual.css.query import NoMatches
from textual.message import Message

from dsvl_tui.core.conversation import ChatMessage, Conversation
from dsvl_tui.core.text import error_line
from dsvl_tui.core.turn import Delta, Ending, Turn

if TYPE_CHECKING:
    from dsvl_tui.backends.remote_probe import Connection
    from dsvl_tui.core.options import Options
    from dsvl_tui.tui.widgets import AssistantMessage, ChatPane
    from engine.types import ChatBackend, PreparesPrompts

Post = Callable[[Message], Any]
R = TypeVar("R")
_job_ids = itertools.count(1)


class Job:
    """One answer to generate for one pane's conversation: its ``Turn``, and where it is drawn."""

    def __init__(self, pane: ChatPane, conversation: Conversation, asked: ChatMessage, *,
                 checkpoint: Callable[[Conversation], None] | None = None, every: float = 1.0) -> None:
        self.pane = pane
        # The answer runs and is recorded as in every front end; ``checkpoint`` journals it as it streams.
        self.turn = Turn(conversation, asked=asked, checkpoint=checkpoint, every=every)
        self.id = next(_job_ids)
        self.started = False
        self.widget: AssistantMessage | None = None  # where the answer streams to
        self._buffer: list[str] = []  # streamed, not drawn yet (the worker thread appends)
        self._signalled = False
        self._lock = threading.Lock()

    @property
    def conversation(self) -> Conversation:
        return self.turn.conversation

    @property
    def asked(self) -> ChatMessage:
        """The user message answered; the answer is dropped if it is gone."""
        return self.turn.asked

    @property
    def cancel(self) -> threading.Event:
        return self.turn.cancel

    @property
    def streamed(self) -> list[str]:
        """All the text so far, as it came."""
        return self.turn.chunks

    def push(self, chunk: str) -> bool:
        """Add streamed text (worker thread); True if the UI must be told (it was not already)."""
        with self._lock:
            self._buffer.append(chunk)
            told, self._signalled = self._signalled, True
        return not told

    def take(self) -> str:
        """Everything streamed since the last call (UI thread)."""
        with self._lock:
            text = "".join(self._buffer)
            self._buffer.clear()
            self._signalled = False
        return text

    def generated(self) -> int:
        return self.turn.generated()

    def partial(self) -> Conversation | None:
        return self.turn.partial()


def answer_places(backend: object) -> int:
    """How many answers ``backend`` runs at once: the engine's ``max_batch`` (answers decoded together; a
    server says its own in ``max_batch``), else one."""
    places = getattr(backend, "max_batch", 1)
    return places if isinstance(places, int) and not isinstance(places, bool) and places >= 1 else 1


class AnswerQueue:
    """Answers waiting for the model, in the order asked; at most ``places`` run at once.

    ``places`` is the backend's (``answer_places``): the engine decodes that many answers together,
    so two tabs stream at the same time; the others wait their turn, visibly.
    """

    def __init__(self, places: int = 1) -> None:
        self.places = places
        self.waiting: deque[Job] = deque()
        self.started: list[Job] = []  # running, oldest first

    @property
    def running(self) -> Job | None:
        """The answer running longest (None: none runs)."""
        return self.started[0] if self.started else None

    def add(self, job: Job) -> None:
        self.waiting.append(job)

    def next(self) -> Job | None:
        """The job to start now, if a place is free and one waits (it becomes a running one)."""
        if len(self.started) >= self.places or not self.waiting:
            return None
        job = self.waiting.popleft()
        job.started = True
        self.started.append(job)
        return job

    def finished(self, job: Job) -> None:
        if job in self.started:
            self.started.remove(job)

    def for_pane(self, pane: ChatPane) -> Job | None:
        """The running or waiting job of ``pane``."""
        return next((job for job in (*self.started, *self.waiting) if job.pane is pane), None)

    def withdraw(self, job: Job) -> bool:
        """Take a waiting job out of the line; False if it is not waiting."""
        try:
            self.waiting.remove(job)
        except ValueError:
            return False
        return True

    def position(self, job: Job) -> int:
        """0 for a running job, 1 for the first waiting, and so on; -1 for neither."""
        if job in self.started:
            return 0
        return list(self.waiting).index(job) + 1 if job in self.waiting else -1

    def __len__(self) -> int:
        return len(self.waiting) + len(self.started)


# -- messages posted by the thread workers ------------------------------------


def reported_from_a_thread(handler: Callable[[Any, Any], R]) -> Callable[[Any, Any], Awaitable[None]]:
    """For a handler of what a thread reports (load progress, an answer's chunks, a measured context).

    Such a report can still be in the queue, or its handler part way through an ``await``, while the
    app shuts down and its screens (or first their widgets) go: there is then nothing left to show it
    on, so it is dropped instead of failing on the empty screen stack or a widget already removed.
    """
    @functools.wraps(handler)
    async def guarded(app: Any, message: Any) -> None:
        if not app.screen_stack:
            return
        try:
            result = handler(app, message)
            if inspect.isawaitable(result):
                await result
        except (IndexError, NoMatches):  # the screen stack emptied, or a query on a screen gone
            if app.screen_stack and app.is_running:  # shutting down: the screen's widgets go before the screen
                raise

    return guarded



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
    """``job``'s turn has ended (``ending``), or the backend refused its input (``refused``: the one-line
    reason; nothing was generated), or it was withdrawn before it started (neither)."""

    job: Job
    ending: Ending | None = None
    refused: str | None = None


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


def generate_answer(backend: ChatBackend, job: Job, post: Post) -> None:
    """Run ``job``'s turn on ``backend``, posting ``AnswerChunk``s and one ``AnswerDone`` (the UI records it)."""
    turn = job.turn
    try:
        turn.open(backend)
    except Exception as exc:  # noqa: BLE001 - raised before any compute: the input is at fault
        post(AnswerDone(job, refused=error_line(exc)))
        return
    for event in turn.events():
        if isinstance(event, Delta) and job.push(event.text):
            post(AnswerChunk(job))
    post(AnswerDone(job, turn.ending))


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
