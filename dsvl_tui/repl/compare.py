"""``/compare`` in the plain REPL: a second model answers each message too, printed under the first.

``load_compared`` loads the second side (``backends.compare.load_side``) while the REPL waits
(Ctrl+C gives up); each answer then starts the compared one with it (``_compare_begin``, in a thread)
and prints it, with its stats, once the main one is done (``_compare_end``). Both answers are kept.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from dsvl_tui.commands.registry import CommandError
from dsvl_tui.repl.journaling import Journaling
from dsvl_tui.repl.output import DIM
from dsvl_tui.repl.terminal import interrupt_sets

if TYPE_CHECKING:
    from dsvl_tui.backends.compare import ComparedThread, CompareRequest, CompareSide
    from dsvl_tui.core.conversation import ChatMessage, Conversation


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

    def _compare_begin(self, conversation: Conversation) -> ComparedThread | None:
        """The compared answer, started with the main one (``/compare``); its label first."""
        if self._compared is None:
            return None
        from dsvl_tui.backends.compare import ComparedThread, side_label

        self._write_err(f"== {side_label(conversation.model)} ==", DIM)
        return ComparedThread(self._compared, conversation)

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
