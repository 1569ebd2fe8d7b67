"""The app's answering, from Enter to the last token: ``Answering`` (the app's ``answers``).

1. **Enter.** ``PromptInput.Submitted`` reaches ``DsvlApp._take``, which runs a
   command or calls ``send``: the message (with the pending images) is added to
   the active pane's conversation and a ``workers.Job`` made for its answer,
   around a ``core.turn.Turn`` (the runner every front end uses).
2. **Journal.** The autosave thread writes the conversation first
   (``Autosaver.save(then=...)``) and posts ``Journaled``: what the user sees
   sent is on disk, even before a large new picture is drawn.
3. **Worker.** ``journaled`` draws the question, mounts the answer's widget
   and queues the job; ``pump`` starts as many answers as the backend decodes
   together (``AnswerQueue.places``: the engine's ``max_batch``) and tells the
   others why they wait. Each runs ``workers.generate_answer`` in a thread
   worker: ``Turn.open`` sends the conversation to the backend (a refusal, say
   a bad image, posts ``AnswerDone(refused=...)``: the message goes back to
   the input).
4. **Chunks.** Each ``Delta`` is buffered in the job; one ``AnswerChunk`` is
   posted until the UI takes the text (``chunk``), so chunks coalesce when the
   screen is slower than the model. The turn journals the answer so far every
   ``PARTIAL_SAVE_SECONDS``, so a kill loses at most that much.
5. **Done.** ``AnswerDone`` carries the turn's ending; ``done`` has the turn
   record the answer (``Turn.record``, as the REPL and ``ask`` do), ends the
   widget, journals the conversation and starts the next waiting answer.

Esc or ``/stop`` cancels the active pane's running turn, or withdraws its
waiting one; quitting cancels every one and journals each running answer so
far as stopped (``save_partials``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

from dsvl_tui.core.conversation import ChatMessage, Conversation, LimitError
from dsvl_tui.core.turn import Done, Failed
from dsvl_tui.storage.autosave import PARTIAL_SAVE_SECONDS
from dsvl_tui.tui import workers as gen

if TYPE_CHECKING:
    from dsvl_tui.tui.app import DsvlApp
    from dsvl_tui.tui.widgets import ChatPane
    from engine.types import ChatBackend, GenerationStats


@dataclass
class Journaled(Message):
    """The autosave worker has written the snapshot holding ``job``'s question: draw it and answer."""

    job: gen.Job


class Answering:
    """The line of answers across the app's panes and what moves each along (see the module's docstring)."""

    def __init__(self, app: DsvlApp) -> None:
        self.app = app
        self.queue = gen.AnswerQueue()
        self.stats: dict[str, GenerationStats] = {}  # the last answer's, by conversation id: each tab shows its own
        self._journaling: dict[ChatPane, gen.Job] = {}  # sent, not drawn until journaled
        self._partials_saved = False

    @property
    def journaling(self) -> bool:
        """A message is waiting for its journal write before it is drawn and answered."""
        return bool(self._journaling)

    def busy(self, pane: ChatPane) -> bool:
        """``pane`` has an answer running, waiting, or about to be queued."""
        return self.queue.for_pane(pane) is not None or pane in self._journaling

    def _job(self, pane: ChatPane, conversation: Conversation, asked: ChatMessage) -> gen.Job:
        return gen.Job(pane, conversation, asked, checkpoint=self.app.autosaver.save, every=PARTIAL_SAVE_SECONDS)

    # -- 1, 2: Enter, then the journal -------------------------------------------------------
    def send(self, text: str) -> None:
        """Add the user's message (with the pending images) to the active pane and queue its answer."""
        app = self.app
        pane, conversation = app.active, app.active.conversation
        if not text.strip() and not conversation.pending:
            return
        if self.busy(pane):
            app.session.set_input(text)
            app.session.error("this conversation is still waiting for an answer; press Esc to stop it first")
            return
        try:
            asked = conversation.add_user(text)
        except LimitError as exc:  # more than a transcript holds: kept in the input, not sent
            app.session.set_input(text)
            app.session.error(str(exc))
            return
        job = self._job(pane, conversation, asked)
        # Journal first, then draw: what the user sees sent is on disk (a large new image takes a while).
        self._journaling[pane] = job
        app.autosaver.save(conversation, then=lambda: app.post_message(Journaled(job)))

    async def journaled(self, job: gen.Job) -> None:
        if self._journaling.get(job.pane) is job:
            del self._journaling[job.pane]
            if job.pane.is_attached:
                await self._start(job)

    def regenerate(self) -> None:
        """Answer the active pane's last question again (``/regenerate`` has dropped the old answer)."""
        pane = self.app.active
        asked = next((m for m in reversed(pane.conversation.messages) if m.role == "user"), None)
        if not self.busy(pane) and asked is not None:
            self.app.call_later(self._start, self._job(pane, pane.conversation, asked))

    # -- 3: the worker ---------------------------------------------------------------------------
    async def _start(self, job: gen.Job) -> None:
        await self.app.sync_pane(job.pane)
        job.widget = await job.pane.start_answer()
        job.widget = await self.app.comparing.split(job)  # type: ignore[assignment]  # /compare: a ComparedPair
        self.queue.add(job)
        self.pump()

    def pump(self) -> None:
        """Start answers while the model has room (``AnswerQueue.places``); tell the waiting ones why they wait."""
        app = self.app
        while app.engine is not None and (job := self.queue.next()) is not None:
            if job.widget is not None:
                job.widget.state = "streaming"
                job.widget.set_marker("")
            self._run(app.engine, job)
        for position, job in enumerate(self.queue.waiting, 1):
            if app.engine is None:
                reason = "waiting for the model to load" if app.model_error is None else \
                    "waiting for a model: load one with /model ID|PATH"
            else:
                reason = "waiting for its turn" + (f" ({position} ahead)" if position > 1 else "")
            if job.widget is not None:
                job.widget.wait(reason)
        self.mark_tabs()
        app.refresh_status()

    def _run(self, backend: ChatBackend, job: gen.Job) -> None:
        self.app.run_worker(lambda: gen.generate_answer(backend, job, self.app.post_message), thread=True,
                            group="generate", exit_on_error=False)

    def mark_tabs(self) -> None:
        """Each tab's label shows whether its answer runs (●) or waits (…)."""
        for pane in self.app.tabs.panes:
            job = self.queue.for_pane(pane)
            self.app.tabs.set_mark(pane, "" if job is None else "\u25cf " if job.started else "\u2026 ")

    # -- 4, 5: chunks, then done -------------------------------------------------------------
    async def chunk(self, job: gen.Job) -> None:
        text = job.take()
        if text and job.widget is not None and job.widget.is_attached:
            await job.widget.write(text)
        if job.pane is self.app.active:
            self.app.refresh_status()  # the context meter grows with the answer

    async def done(self, message: gen.AnswerDone) -> None:
        app, job = self.app, message.job
        self.queue.finished(job)
        if (used := app.context_tokens.get(job.conversation.id)) is not None:
            app.context_tokens[job.conversation.id] = used + job.generated()  # until it is measured again
        if message.refused is not None:  # nothing generated: a new message goes back to the input to edit
            if await job.pane.give_back(job.asked, message.refused) and not app.prompt.text:
                app.session.set_input(job.asked.text)
        else:
            if job.widget is not None and job.widget.is_attached:
                await job.widget.write(job.take())
            ending = message.ending  # None: withdrawn before it started, an empty stopped answer
            stats = ending.stats if ending is not None else None
            await job.pane.finish_answer(job.turn.record(), stats, stopped=not isinstance(ending, Done | Failed),
                                         error=ending.error if isinstance(ending, Failed) else None)
            if stats is not None and stats.new_tokens:
                self.stats[job.conversation.id] = stats
            app.model.answered()
        for notice in job.conversation.image_notices():  # a picture changed since it was attached or loaded
            app.session.info(notice)
        app.autosave(job.conversation)
        self.pump()
        app.measure_context(job.conversation)

    # -- stopping ------------------------------------------------------------------------------
    def withdraw(self, pane: ChatPane) -> None:
        """Stop ``pane``'s answer: cancel it if it runs, take it out of the line if it waits."""
        self.app.comparing.stop(pane)  # /compare: its compared answer too (it may outlast the main one)
        job = self.queue.for_pane(pane)
        if job is not None and job.started:
            job.cancel.set()
        elif job is not None and self.queue.withdraw(job):
            job.cancel.set()
            self.app.post_message(gen.AnswerDone(job))

    def save_partials(self) -> bool:
        """Stop every answer and queue a journal write of each running one's text so far, as stopped (the app
        then waits for the journal); False if that was done already."""
        if self._partials_saved:
            return False
        self._partials_saved = True
        for job in [*self.queue.started, *self.queue.waiting]:
            job.cancel.set()
        for job in self.queue.started:
            if (snapshot := job.partial()) is not None:
                self.app.autosaver.save(snapshot)
        return True
