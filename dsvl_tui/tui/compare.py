"""``/compare`` in the app: which tab compares with what, and each message's answers side by side.

``TuiCompare`` is the app's ``CompareHost`` (``commands.builtin._compare``): each tab (pane) may compare
with its own ``CompareSide``, loaded off the event loop (``read_then``), what a second model needs said
first. When a comparing tab's answer starts, ``split`` puts a ``ComparedPair`` where its answer widget
was and starts the compared answer on its own thread at once; the main answer keeps its place in the
app's answer queue. Esc stops both (``stop``); the compared answer is kept on the main one, and journaled, once
both have ended.

Until then it is journaled as it streams, as the main answer is (kill -9 keeps it, stopped, for ``--resume``):
``ComparedPartial`` puts it so far, marked stopped, on the answer to its question in every snapshot the autosaver
takes of the conversation (``Autosaver.streaming``): the main answer's own checkpoints while that streams, the
recorded answer's once it has ended, and the compared side's checkpoints, at most every ``PARTIAL_SAVE_SECONDS``
as the main answer's.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dsvl_tui.commands.registry import CommandError

if TYPE_CHECKING:
    from dsvl_tui.backends.compare import CompareRequest, CompareSide
    from dsvl_tui.backends.compared_turn import ComparedTurn
    from dsvl_tui.core.conversation import Conversation
    from dsvl_tui.core.turn import Turn
    from dsvl_tui.tui.app import DsvlApp
    from dsvl_tui.tui.widgets import AssistantMessage, ComparedJob, ComparedPair
    from dsvl_tui.tui.workers import Job


class TuiCompare:
    def __init__(self, app: DsvlApp) -> None:
        self.app = app
        self.sides: weakref.WeakKeyDictionary[object, CompareSide] = weakref.WeakKeyDictionary()  # by pane
        self.running: weakref.WeakKeyDictionary[object, ComparedJob] = weakref.WeakKeyDictionary()  # by pane

    # -- CompareHost ----------------------------------------------------------------------------

    def compared_side(self) -> CompareSide | None:
        return self.sides.get(self.app.active)

    def load_compared(self, request: CompareRequest) -> CompareSide:
        """On a thread (``read_then``): the side for ``request`` next to the model loaded now."""
        from dsvl_tui.backends.compare import CompareError, load_side
        from dsvl_tui.core.text import error_line
        from dsvl_tui.repl.load_progress import ProgressLines, describe_failure

        app = self.app
        main = app.engine
        if main is None:
            raise CommandError("no model loaded yet to compare with; wait for it, or /model ID loads one")

        def say(line: str) -> None:
            app.call_from_thread(app.session.info, line)

        try:
            return load_side(app.options, request, main, say=say, progress=ProgressLines(say, every=5.0),
                             loader=app.loader)
        except (CompareError, CommandError):
            raise
        except Exception as exc:  # noqa: BLE001 - any load failure is one line; the app goes on
            raise CommandError(f"the compared model: {describe_failure(exc) or error_line(exc)}") from None

    def set_compared(self, side: CompareSide | None) -> None:
        pane = self.app.active
        if side is None:
            self.sides.pop(pane, None)
        else:
            self.sides[pane] = side

    # -- answering --------------------------------------------------------------------------------

    async def split(self, job: Job) -> AssistantMessage | ComparedPair | None:
        """``job``'s answer widget, side by side with the compared answer (started now) if its tab compares."""
        side = self.sides.get(job.pane)
        widget = job.widget
        if side is None or widget is None:
            return widget
        from dsvl_tui.backends.compared_turn import ComparedTurn
        from dsvl_tui.core.conversation import side_label
        from dsvl_tui.tui import answering
        from dsvl_tui.tui.widgets import ComparedJob, ComparedPair, SideAnswer

        pane, conversation = job.pane, job.conversation
        self._end_previous(pane, conversation, job)
        turn = ComparedTurn.of(side, conversation)  # its history now, before the answer
        partial = ComparedPartial(turn, job.turn)
        autosaver = self.app.autosaver
        turn.every = answering.PARTIAL_SAVE_SECONDS  # as the main answer's checkpoints
        autosaver.streaming(conversation.id, partial)

        def checkpoint() -> None:  # on the compared answer's thread, as the main answer's are on its worker's
            if (snapshot := partial.snapshot()) is not None:
                autosaver.save(snapshot)

        turn.checkpoint = checkpoint

        def ended(message: object) -> None:  # kept on the main answer: journaled as it is from now on
            autosaver.streaming(conversation.id, None, was=partial)
            self.app.autosave(conversation)

        main_model = conversation.model or (self.app.engine.info.model_id if self.app.engine is not None else "")
        pair = ComparedPair(SideAnswer(side_label(main_model)), SideAnswer(side.label), ended=ended)
        await pane.mount(pair, after=widget)
        await widget.remove()
        pane.pending_answer = pair  # type: ignore[assignment]  # it stands for the answer widget (ComparedPair)
        partial.pair = pair
        compared = ComparedJob(turn, pair.other)
        self.running[pane] = compared
        compared.start()
        return pair

    def _end_previous(self, pane: object, conversation: Conversation, job: Job) -> None:
        """A message sent while the last compared answer still streams: that one stops, and what it said so far
        is its answer (kept now, so this turn's compared history holds it)."""
        previous = self.running.get(pane)
        if previous is None or previous.result is not None:
            return
        kept = previous.turn.stop_here()
        messages = conversation.messages
        index = next((i for i in range(len(messages) - 1, -1, -1) if messages[i] is job.asked), 0)
        answered = messages[index - 1] if index else None
        if answered is not None and answered.role == "assistant" and answered.compared is None:
            answered.compared = kept

    def stop(self, pane: object) -> None:
        """Esc: stop ``pane``'s compared answer too (it may outlast the main one)."""
        compared = self.running.get(pane)
        if compared is not None and compared.result is None:
            compared.turn.cancel.set()


@dataclass(eq=False)
class ComparedPartial:
    """A compared answer while it streams, for the journal (``autosave.Partial``): on the answer to ``main``'s
    question in each snapshot, so far and marked stopped, until it is kept on the main answer itself."""

    turn: ComparedTurn
    main: Turn  # the main answer's: its question, and its answer so far while that streams
    pair: ComparedPair | None = None  # where both are shown: its ``message`` is the main answer once recorded

    def amend(self, snapshot: Conversation) -> None:
        from dsvl_tui.backends.compared_turn import put_compared

        recorded = self.pair.message if self.pair is not None else None  # the main answer, once recorded
        put_compared(snapshot, self.main.asked, self.turn.so_far(), recorded=recorded)

    def snapshot(self) -> Conversation | None:
        """While it streams: the main answer so far (``Turn.partial``) if that streams too, else the conversation."""
        if self.turn.result is not None:
            return None
        main = self.main
        if main.answering():
            return main.partial()
        conversation = main.conversation
        return conversation if any(message is main.asked for message in conversation.messages) else None
