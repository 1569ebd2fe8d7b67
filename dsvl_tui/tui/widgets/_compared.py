"""Two answers to one message side by side (``/compare``): the main model's and the compared one's.

``ComparedPair`` stands where one ``AssistantMessage`` would (the pane's answer in progress, or a
recorded answer that carries ``ChatMessage.compared``): what the app does to an answer (``write``,
``wait``, ``finish``, its ``state`` and ``message``) goes to the left side, ``SideAnswer``s labelled
with their models. The right side streams from its own thread (``tui.compare``), posting
``ComparedChunk``/``ComparedDone`` to its widget; each side ends with its own stats line (tokens,
tok/s, time to first token). The compared answer is kept on the main one once both have ended, or,
if a command redraws the pane while it still streams, stopped there with what it said so far.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.message import Message
from textual.widgets import Label

from dsvl_tui.core.conversation import ChatMessage, ComparedAnswer
from dsvl_tui.core.text import printable
from dsvl_tui.tui.widgets._assistant_message import AssistantMessage
from dsvl_tui.tui.widgets._user_message import role_line

if TYPE_CHECKING:
    from dsvl_tui.backends.compared_turn import ComparedTurn
    from dsvl_tui.tui.widgets._markdown_view import MarkdownView
    from engine.types import GenerationStats


class SideAnswer(AssistantMessage):
    """One side's answer in a comparison, headed by its model's name instead of "DeepSeek-VL"."""

    DEFAULT_CSS = """
    SideAnswer {
        width: 1fr;
        margin: 0 1 1 0;
    }
    """

    def __init__(self, label: str, message: ChatMessage | None = None, *, versions: tuple[int, int] = (1, 1)) -> None:
        super().__init__(message, versions=versions)
        self.label = label
        self.job: ComparedJob | None = None  # the compared side while it streams

    def compose(self) -> ComposeResult:
        yield Label(Content(printable(role_line(self.label, self.versions))), classes="role")
        yield self._view
        yield Label(Content(self._marker), classes="marker")

    async def on_compared_chunk(self, message: ComparedChunk) -> None:
        await self.write(message.job.take())

    async def on_compared_done(self, message: ComparedDone) -> None:
        await self.write(message.job.take())
        answer = message.answer
        await self.finish(answer.stats, stopped=answer.stopped, error=answer.error)
        pair = self.parent
        if isinstance(pair, ComparedPair):
            pair.compared_ended(answer)

    def on_unmount(self) -> None:
        if self.job is not None and self.job.result is None:  # the pane went, or the turn was given back
            self.job.turn.cancel.set()


@dataclass(eq=False)
class ComparedJob:
    """The compared answer of one message, generated on its own thread into its ``SideAnswer``."""

    turn: ComparedTurn
    widget: SideAnswer
    result: ComparedAnswer | None = None
    _buffer: list[str] = field(default_factory=list)
    _signalled: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.widget.job = self
        self.widget.wait("starting")
        threading.Thread(target=self._run, daemon=True, name="compared-answer").start()

    def _run(self) -> None:
        answer = self.turn.run(self._push)
        self.result = answer
        self.widget.post_message(ComparedDone(self, answer))  # thread-safe; dropped if the widget has gone

    def _push(self, chunk: str) -> None:
        with self._lock:
            self._buffer.append(chunk)
            told, self._signalled = self._signalled, True
        if not told:  # once until the UI takes it: chunks coalesce while the UI is slower than the model
            self.widget.post_message(ComparedChunk(self))

    def take(self) -> str:
        with self._lock:
            text = "".join(self._buffer)
            self._buffer.clear()
            self._signalled = False
        return text


@dataclass
class ComparedChunk(Message):
    job: ComparedJob


@dataclass
class ComparedDone(Message):
    job: ComparedJob
    answer: ComparedAnswer


class ComparedPair(Horizontal):
    """The main answer (left) and the compared one (right), standing for one answer in the pane."""

    DEFAULT_CSS = """
    ComparedPair {
        height: auto;
    }
    """

    def __init__(self, main: SideAnswer, other: SideAnswer, *,
                 ended: Callable[[ChatMessage], None] | None = None) -> None:
        super().__init__()
        self.main, self.other = main, other
        self._compared: ComparedAnswer | None = None
        self._ended = ended  # called with the main answer once it carries the compared one (to save it)

    @classmethod
    def of(cls, message: ChatMessage, main_label: str, versions: tuple[int, int] = (1, 1)) -> ComparedPair:
        """A recorded answer with its compared answer, as a transcript or the journal brought it back."""
        from dsvl_tui.core.conversation import side_label

        compared = message.compared
        assert compared is not None
        shown = ChatMessage("assistant", compared.text, stats=compared.stats, stopped=compared.stopped,
                            error=compared.error)
        settings = {}
        if compared.settings is not None:
            from dataclasses import asdict

            settings = {key: value for key, value in asdict(compared.settings).items() if key != "ignore_eos"}
        label = side_label(compared.model, compared.endpoint, compared.quantize)
        return cls(SideAnswer(main_label, message, versions=versions),
                   SideAnswer(label + (" (own settings)" if settings else ""), shown))

    def compose(self) -> ComposeResult:
        yield self.main
        yield self.other

    # -- what the pane and the app do to an answer, done to the main side ---------------------

    @property
    def message(self) -> ChatMessage | None:
        return self.main.message

    @message.setter
    def message(self, value: ChatMessage | None) -> None:
        self.main.message = value
        self._keep()

    @property
    def state(self) -> str:
        return self.main.state

    @state.setter
    def state(self, value: str) -> None:
        self.main.state = value

    @property
    def text(self) -> str:
        return self.main.text

    @property
    def markdown(self) -> MarkdownView:
        return self.main.markdown

    def set_marker(self, text: str) -> None:
        self.main.set_marker(text)

    def wait(self, reason: str) -> None:
        self.main.wait(reason)

    async def write(self, chunk: str) -> None:
        await self.main.write(chunk)

    async def finish(self, stats: GenerationStats | None = None, *, stopped: bool = False,
                     error: str | None = None) -> None:
        await self.main.finish(stats, stopped=stopped, error=error)
        job = self.other.job
        if stopped and job is not None and job.result is None:  # Esc stops both sides
            job.turn.cancel.set()

    # -- the compared side ---------------------------------------------------------------------

    def on_unmount(self) -> None:
        """Taken off the screen while its compared side still streams (a command redrew the pane: /regenerate,
        /branch, /undo): that side stops (``SideAnswer.on_unmount``) and what it said so far is kept, stopped."""
        job = self.other.job
        if job is not None and job.result is None and self._compared is None:
            self.compared_ended(job.turn.stop_here())

    def compared_ended(self, answer: ComparedAnswer) -> None:
        self._compared = answer
        self._keep()

    def _keep(self) -> None:
        """Once the main answer is recorded and the compared one has ended: keep it on the main one."""
        message, compared = self.main.message, self._compared
        if message is None or compared is None or message.compared is compared:
            return
        message.compared = compared
        if self._ended is not None:
            self._ended(message)


def answer_widget(message: ChatMessage, main_label: str = "DeepSeek-VL", *,
                  versions: tuple[int, int] = (1, 1)) -> AssistantMessage | ComparedPair:
    """The widget a recorded answer is shown with (``versions``: which of its versions, ``core.branches``): side by
    side when it carries a compared answer."""
    if message.compared is not None:
        return ComparedPair.of(message, main_label, versions)
    return AssistantMessage(message, versions=versions)
