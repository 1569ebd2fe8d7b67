"""The context meter, for ``app.DsvlApp``: how much of the model's context each conversation fills, in the status bar.

A conversation's prompt is measured (tokenised by the model's ``prepare``) in a thread worker whenever
it changes (``measure_context``: a new tab, an answer done, a model loaded); the result comes back as
``workers.ContextMeasured``. ``refresh_status`` shows it, plus the tokens of the answer streaming in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import work

from dsvl_tui.tui import workers as gen
from dsvl_tui.tui.workers import reported_from_a_thread

if TYPE_CHECKING:
    from textual.app import App

    from dsvl_tui.core.conversation import Conversation
    from dsvl_tui.tui.model import AppModel
    from dsvl_tui.tui.widgets import ChatPane, StatusBar
    from engine.types import ChatBackend, GenerationStats, PreparesPrompts

    _AppBase = App[int]
else:
    _AppBase = object


class ContextMeter(_AppBase):
    """A mixin of ``DsvlApp`` (Textual finds ``on_context_measured`` on the app's class).
    ``DsvlApp.__init__`` sets ``context_tokens``."""

    context_tokens: dict[str, int | None]  # each conversation's prompt, measured

    if TYPE_CHECKING:  # what the meter uses of the app (``DsvlApp``)
        engine: ChatBackend | None
        model: AppModel

        @property
        def active(self) -> ChatPane: ...

        @property
        def status(self) -> StatusBar: ...

        @property
        def queue(self) -> gen.AnswerQueue: ...

        @property
        def stats(self) -> dict[str, GenerationStats]: ...

    def refresh_status(self) -> None:
        info, conversation = self.engine.info if self.engine is not None else None, self.active.conversation
        state, detail = self.model.state()
        used = self.context_tokens.get(conversation.id)
        job = self.queue.for_pane(self.active)
        if used is not None and job is not None and job.started and job.conversation is conversation:
            used += job.generated()  # the prompt was measured; the answer streaming into it is counted
        self.status.show(state=state, detail=detail, info=info, stats=self.stats.get(conversation.id),
                         context_used=used,
                         pending_images=len(conversation.pending), waiting=len(self.queue.waiting))

    def measure_context(self, conversation: Conversation) -> None:
        if self.engine is not None and hasattr(self.engine, "prepare"):
            self._measure(self.engine, conversation)

    @work(thread=True, exclusive=True, group="context", exit_on_error=False)
    def _measure(self, backend: PreparesPrompts, conversation: Conversation) -> None:
        gen.measure_context(backend, conversation, self.post_message)

    @reported_from_a_thread
    def on_context_measured(self, message: gen.ContextMeasured) -> None:
        self.context_tokens[message.conversation.id] = message.tokens
        self.refresh_status()
