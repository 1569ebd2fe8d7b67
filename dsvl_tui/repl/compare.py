"""``/compare`` in the plain REPL: a second model answers each message too, printed under the first.

``load_compared`` loads the second side (``backends.compare.load_side``) while the REPL waits
(Ctrl+C gives up); each answer then starts the compared one with it (``_compare_begin``, in a thread)
and prints it, with its stats, once the main one is done (``_compare_end``). Both answers are kept. While it
streams, it is journaled on the main answer (so far, or kept), marked stopped, as the main answer is: its own
checkpoints every ``PARTIAL_SAVE_SECONDS`` and the main answer's carry it, so a kill keeps both.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from dsvl_tui.commands.registry import CommandError
from dsvl_tui.repl.journaling import Journaling
from dsvl_tui.repl.output import DIM
from dsvl_tui.repl.terminal import interrupt_sets

if TYPE_CHECKING:
    from dsvl_tui.backends.compare import CompareRequest, CompareSide
    from dsvl_tui.backends.compared_turn import ComparedThread
    from dsvl_tui.core.conversation import ChatMessage, ComparedAnswer, Conversation


class ReplCompare(Journaling):
    """A layer of ``app.Repl``: it is the ``CompareHost`` of ``commands.builtin._compare``."""

    _compared: CompareSide | None  # the second side each message also goes to

    def compare_host(self) -> ReplCompare:
        return self

    def compared_side(self) -> CompareSide | None:
        return self._compared

    def load_compared(self, request: CompareRequest) -> CompareSide:
        from dsvl_tui.backends.compare import load_side
        from dsvl_tui.repl.load_progress import ProgressLines, describe_failure

        cancel = threading.Event()
        with interrupt_sets(cancel):
            main = self._slot.wait(cancel, poll=self._flush_notes)
            if main is None:
                raise CommandError("no model loaded to compare with; /model ID loads one")
            try:
                return load_side(self.options, request, main, say=self.info, progress=ProgressLines(self.info))
            except (CommandError, ValueError):
                raise
            except Exception as exc:  # noqa: BLE001 - any load failure is one line; the REPL goes on
                raise CommandError(f"the compared model: {describe_failure(exc)}") from None

    def set_compared(self, side: CompareSide | None) -> None:
        self._compared = side

    def _compare_begin(self, conversation: Conversation, main_so_far: list[str]) -> ComparedThread | None:
        """The compared answer, started with the main one (``/compare``); its label first. While it streams it
        journals itself (on its thread) on the main answer: so far (``main_so_far``, its chunks) or kept."""
        if self._compared is None:
            return None
        from dsvl_tui.backends.compared_turn import ComparedThread
        from dsvl_tui.core.conversation import side_label
        from dsvl_tui.storage.autosave import PARTIAL_SAVE_SECONDS

        self._write_err(f"== {side_label(conversation.model)} ==", DIM)
        asked = conversation.messages[-1]

        def checkpoint(compared: ComparedThread) -> None:
            with self._journal_lock:  # built and written in turn with the main thread's snapshots
                if conversation is not self._conversation:
                    return
                snapshot = compared_snapshot(conversation, asked, "".join(main_so_far), compared.turn.so_far())
                if snapshot is not None:
                    self._autosave(snapshot)

        return ComparedThread(self._compared, conversation, checkpoint, PARTIAL_SAVE_SECONDS)

    def _compare_end(self, compared: ComparedThread, answer: ChatMessage, cancel: threading.Event) -> None:
        """Wait for the compared answer, keep it on ``answer``, print it under its label with its stats."""
        from dsvl_tui.backends.choose import stats_line

        answer.compared = compared.finish(cancel.is_set())
        self._write_err(f"== {compared.turn.side.label} ==", DIM)
        printer = self._printer()
        printer.feed(answer.compared.text)
        printer.finish()
        if answer.compared.error:
            self._failed(f"the compared model: {answer.compared.error}")
        line = stats_line(answer.compared.stats)
        if line:
            self._write_err(f"{compared.turn.side.label}: {line}", DIM)



def compared_snapshot(conversation: Conversation, asked: ChatMessage, main_so_far: str,
                      compared: ComparedAnswer) -> Conversation | None:
    """A snapshot of ``conversation`` with ``compared`` on the answer to ``asked`` (that answer so far,
    stopped, while it streams); None once the question is gone or its answer keeps a compared one already."""
    from dsvl_tui.backends.compared_turn import put_compared

    snapshot = conversation.copy()
    if snapshot.messages and snapshot.messages[-1] is asked:  # the main answer still streams
        snapshot.add_answer(main_so_far, stopped=True)
    return snapshot if put_compared(snapshot, asked, compared) else None
