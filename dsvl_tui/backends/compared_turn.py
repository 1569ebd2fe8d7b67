"""One compared answer (``/compare``, ``ask --compare``): ``ComparedTurn`` generates it on a ``CompareSide``
(``backends.compare``), ``ComparedThread`` on a thread of its own beside the main answer.

The compared side sees its own earlier answers (``Conversation.engine_messages(compared=True)``), and what it
said is kept on the main answer as ``ChatMessage.compared``, which transcripts store. While it streams, a
``checkpoint`` lets the front end journal it so far, as the main answer's ``Turn`` is, on the answer to its
question in a snapshot of the conversation (``put_compared``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from dsvl_tui.core.conversation import ChatMessage, ComparedAnswer, Conversation, cut_text, text_limits
from dsvl_tui.core.stats import valid_stats

if TYPE_CHECKING:
    from dsvl_tui.backends.compare import CompareSide
    from engine.types import GenerationSettings, Message


@dataclass
class ComparedTurn:
    """One compared answer, prepared when the question is sent: the compared side's history then (before
    the main answer is added), so both sides may stream at once. ``checkpoint``, if set, is called while it
    streams, at most every ``every`` seconds (the app journals the answer so far, as the main one's ``Turn`` does)."""

    side: CompareSide
    messages: list[Message]
    settings: GenerationSettings
    system: str | None
    cache_key: str
    cancel: threading.Event = field(default_factory=threading.Event)
    parts: list[str] = field(default_factory=list)
    stream: object | None = None
    checkpoint: Callable[[], object] | None = None
    every: float = 1.0
    result: ComparedAnswer | None = None  # once ``run`` has ended

    @classmethod
    def of(cls, side: CompareSide, conversation: Conversation, cancel: threading.Event | None = None) -> ComparedTurn:
        return cls(side, conversation.engine_messages(compared=True), side.settings_for(conversation),
                   conversation.system, f"{conversation.id}/compared", cancel or threading.Event())

    def run(self, on_chunk: Callable[[str], None] = lambda chunk: None) -> ComparedAnswer:
        """Generate the compared answer, handing each chunk to ``on_chunk``; whatever way it ends (done,
        stopped, failed, refused) it is returned as a ``ComparedAnswer``, never raised."""
        from dsvl_tui.core.text import error_line

        stats, error = None, None
        saved = time.monotonic()
        try:
            stream = self.side.backend.stream(self.messages, self.settings, system=self.system, cancel=self.cancel,
                                              cache_key=self.cache_key)
            self.stream = stream
            for chunk in stream:
                self.parts.append(chunk)
                on_chunk(chunk)
                if self.checkpoint is not None and time.monotonic() - saved >= self.every:
                    saved = time.monotonic()
                    self.checkpoint()
            stats = getattr(stream, "stats", None)
        except Exception as exc:  # noqa: BLE001 - the compared side's failure is its answer's, never the main one's
            error = error_line(exc)
            stats = getattr(self.stream, "stats", None)
        stopped = error is None and (self.cancel.is_set() or getattr(stats, "stop_reason", None) == "cancelled")
        self.result = self.answer(stats, stopped=stopped, error=error)
        return self.result

    def so_far(self) -> ComparedAnswer:
        """Its answer once ended, else what it said so far as a stopped answer (to journal while it streams)."""
        return self.result or self.answer(stopped=True)

    def stop_here(self) -> ComparedAnswer:
        """Stop it and give what it said so far, with its stream's stats, as a stopped answer (to keep now)."""
        self.cancel.set()
        return self.answer(getattr(self.stream, "stats", None), stopped=True)

    def answer(self, stats: Any = None, *, stopped: bool = False, error: str | None = None) -> ComparedAnswer:
        """The answer so far as the transcript keeps it (cut to a message's limit, stats made valid)."""
        limit = text_limits()[0]
        marker = f"\n\n[answer cut at {limit:,} characters, the most a transcript holds]"
        text = cut_text("".join(self.parts), limit, marker)
        side = self.side
        settings = self.settings if side.settings else None
        return ComparedAnswer(side.model, text, endpoint=side.endpoint, quantize=side.quantize, settings=settings,
                              stats=valid_stats(stats), stopped=stopped,
                              error=None if error is None else cut_text(error, limit, " [cut]"))


class ComparedThread:
    """The compared answer generated on its own thread while the main one streams (the REPL, ``ask``)."""

    def __init__(self, side: CompareSide, conversation: Conversation,
                 checkpoint: Callable[[ComparedThread], object] | None = None, every: float = 1.0) -> None:
        """``checkpoint(self)`` is called on its thread while it streams, at most every ``every`` seconds."""
        self.turn = ComparedTurn.of(side, conversation)  # its history now, before the main answer is added
        if checkpoint is not None:
            self.turn.checkpoint, self.turn.every = lambda: checkpoint(self), every
        self.thread = threading.Thread(target=self.turn.run, daemon=True, name="compared-answer")
        self.thread.start()

    def stop(self) -> None:
        """Stop it and wait for it (the main answer was refused: no turn is recorded)."""
        self.turn.cancel.set()
        self.thread.join()

    def finish(self, interrupted: bool) -> ComparedAnswer:
        """The compared answer once it is complete (stopped where, and as soon as, Ctrl+C stopped the main one)."""
        if interrupted:
            self.turn.cancel.set()
        while self.thread.is_alive():
            try:
                self.thread.join()
            except KeyboardInterrupt:  # Ctrl+C while it finishes: it stops too, and is kept
                self.turn.cancel.set()
        assert self.turn.result is not None  # ``run`` never raises: it always ends with one
        return self.turn.result


def put_compared(snapshot: Conversation, asked: ChatMessage, compared: ComparedAnswer, *,
                 recorded: ChatMessage | None = None) -> bool:
    """Put ``compared`` on the answer to ``asked`` in ``snapshot`` (a copy: its own message list; the answer is
    replaced, never changed). Not if the question is gone or not answered there, if that answer is not
    ``recorded`` (another answer to it since: /regenerate), or if it keeps a compared answer already."""
    messages = snapshot.messages
    index = next((i for i in range(len(messages) - 1, -1, -1) if messages[i] is asked), None)
    if index is None or index + 1 >= len(messages):
        return False
    answer = messages[index + 1]
    if (recorded is not None and answer is not recorded) or answer.role != "assistant" or answer.compared is not None:
        return False
    messages[index + 1] = replace(answer, compared=compared)
    return True
