"""File reads off the event loop, for ``app.DsvlApp``: ``read_then``, and the input typed while one runs.

A command that reads a file (``/image``, ``/load``, ``/resume``...) hands the read to
``Session.read_then``: it runs in a thread worker, so a large transcript or picture never freezes the
screen, and its ``then`` runs back on the event loop. What the user submits meanwhile waits
(``_typed_ahead``) and runs in order once the reads are done: a message typed after ``/image`` gets
the image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from textual import work

from dsvl_tui.commands.registry import CommandError
from dsvl_tui.core.text import error_line

T = TypeVar("T")

if TYPE_CHECKING:
    from textual.app import App

    from dsvl_tui.core.conversation import Conversation
    from dsvl_tui.tui.session import TuiSession
    from dsvl_tui.tui.widgets import ChatPane

    _AppBase = App[int]
else:
    _AppBase = object


class FileReads(_AppBase):
    """A mixin of ``DsvlApp`` (Textual finds handlers on the app's class): the reads and the input held
    for them. ``DsvlApp.__init__`` sets ``_reading`` and ``_typed_ahead``."""

    _reading: int  # file reads running in threads (read_then)
    _typed_ahead: list[str]  # input submitted during those reads, run in order after them

    if TYPE_CHECKING:  # what the reads use of the app (``DsvlApp``)
        session: TuiSession

        @property
        def active(self) -> ChatPane: ...

        def autosave(self, conversation: Conversation) -> None: ...

        async def sync_pane(self, pane: ChatPane, force: bool = False) -> None: ...

        def _take(self, typed: str) -> None: ...

    def read_then(self, read: Callable[[], T], then: Callable[[T], None]) -> None:
        """``Session.read_then``: a transcript of up to the format's limits is read in a thread."""
        self._reading += 1
        self._read_in_thread(read, then)

    @work(thread=True, group="file-reads")
    def _read_in_thread(self, read: Callable[[], T], then: Callable[[T], None]) -> None:
        try:
            result = read()
        except Exception as exc:  # noqa: BLE001 - a bug in a read must not end the app
            problem = str(exc) if isinstance(exc, CommandError) else f"reading failed: {error_line(exc)}"
            self.call_from_thread(self._read_done, lambda: self.session.error(problem))
            return
        self.call_from_thread(self._read_done, lambda: then(result))

    def _read_done(self, finish: Callable[[], None]) -> None:
        self._reading -= 1
        try:
            finish()
        except CommandError as exc:
            self.session.error(str(exc))
        self.autosave(self.active.conversation)
        self.call_later(self.sync_pane, self.active)
        while self._typed_ahead and not self._reading:  # a message typed after /image gets the image
            self._take(self._typed_ahead.pop(0))
