"""Answering in the plain REPL: from a message sent to its answer streamed, printed and journaled.

``_answer`` waits for the model (``_backend``; Ctrl+C gives up), streams the answer through
``core.turn.stream_answer`` (journaled as it streams, so even kill -9 keeps most of it), then says
what the server dropped, the error if any, and the stats line. If no answer can start (no model, a bad
image), the message is taken back out (``_take_back``) and its text returned to the prompt.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING, TextIO

from dsvl_tui.repl.compare import ReplCompare
from dsvl_tui.repl.output import DIM
from dsvl_tui.repl.terminal import interrupt_sets, keys_not_echoed

if TYPE_CHECKING:
    from dsvl_tui.backends.compared_turn import ComparedThread
    from dsvl_tui.core.conversation import ChatMessage, Conversation
    from engine.types import ChatBackend


class Answering(ReplCompare):
    """The last layer under ``app.Repl``: its answers."""

    _stdin: TextIO  # its keys are not echoed into an answer
    _next_input: str  # what the next prompt starts with (a message not sent comes back)
    _comparing: ComparedThread | None = None  # /compare: the compared answer streaming beside this one

    def _answer(self, mine: ChatMessage | None) -> None:
        """Stream an answer to the conversation's last user message.

        ``mine`` is the message just sent: if no answer can start (no model, a
        bad image), it is taken back out and its text returned to the prompt.
        """
        from dsvl_tui.core.turn import stream_answer
        from dsvl_tui.storage.autosave import PARTIAL_SAVE_SECONDS
        from engine.errors import EngineError

        conversation = self._conversation
        cancel = threading.Event()
        self._cancel = cancel
        try:
            with interrupt_sets(cancel), keys_not_echoed(self._stdin, self._out, self._err):
                backend = self._backend(cancel)
                if backend is None:
                    self._take_back(mine)
                    return
                printer = self._printer()
                notes: list[str] = []  # what the server sent that was dropped: said after the answer
                main_so_far: list[str] = []  # the compared answer's checkpoints journal it with this answer so far
                compared = self._compare_begin(conversation, main_so_far)
                self._comparing = compared

                def on_chunk(chunk: str) -> None:
                    main_so_far.append(chunk)
                    printer.feed(chunk)

                try:
                    # The answer so far is journaled (as stopped) as it streams, so even kill -9 keeps most of it.
                    answer = stream_answer(backend, conversation, cancel=cancel, on_chunk=on_chunk,
                                           on_note=notes.append,
                                           on_open=self._autosave if self.options.endpoint else None,
                                           checkpoint=self._checkpoint, every=PARTIAL_SAVE_SECONDS)
                except EngineError as exc:  # input problems, raised before anything is generated
                    if compared is not None:
                        compared.stop()
                    self._failed(str(exc))
                    self._take_back(mine)
                    return
                finally:
                    printer.finish()
                if compared is not None:
                    self._show_stats(answer, conversation.model)
                    self._compare_end(compared, answer, cancel)
        finally:
            self._cancel = None
            self._comparing = None
            for notice in conversation.image_notices():  # a picture changed since it was attached or loaded
                self.info(notice)
        for note in notes:
            self.info(note)
        if answer.error:
            self._failed(answer.error)
        if answer.compared is None:
            self._show_stats(answer)
        self._autosave()

    def _checkpoint(self, snapshot: Conversation) -> None:
        """Journal the answer so far (``Turn.partial``), unless the conversation was replaced meanwhile."""
        if snapshot.id != self._conversation.id:
            return
        compared = self._comparing
        if compared is not None and snapshot.messages:  # /compare: the compared answer so far rides along
            snapshot.messages[-1] = replace(snapshot.messages[-1], compared=compared.turn.so_far())
        self._autosave(snapshot)

    def _backend(self, cancel: threading.Event) -> ChatBackend | None:
        if self._slot.backend is None and self._slot.loading is not None:
            self._write_err(f"waiting for {self._slot.loading} to load (Ctrl+C gives up)", DIM)
        backend = self._slot.wait(cancel, poll=self._flush_notes)
        self._flush_notes()  # says why the load failed, once
        if backend is None and not cancel.is_set():
            if self._interactive or self._slot.error is None:
                self.error("no model loaded; /model ID loads one")
            if not self._interactive:
                self.exit_code, self._running = 4, False
        elif backend is not None:
            self._conversation.model = self._slot.model or self._conversation.model
        return backend

    def _take_back(self, mine: ChatMessage | None) -> None:
        conversation = self._conversation
        if mine is None:  # /regenerate: the question stays, and the answer it had is shown again
            last = conversation.messages[-1] if conversation.messages else None
            if last is not None and conversation.alternatives.get(last.id):
                conversation.take_back(last)
            return
        if not conversation.take_back(mine):
            return
        conversation.pending[:0] = mine.images
        if self._interactive:
            self._next_input = mine.text
            self._write_err("(not sent: your message is back at the prompt)", DIM)
