"""Textual's Linux/macOS driver with keyboard input that cannot end the app.

Textual reads the terminal in an input thread and decodes it with a strict
UTF-8 decoder: one byte that is not UTF-8 (a paste from a Latin-1 file, a
terminal in another encoding, ``tmux send-keys -H ff``) raises there, the
thread dies, and the app panics and exits, with exit code 0. ``InputDriver``
decodes with ``errors="replace"``: a bad byte becomes U+FFFD and the app goes
on. Should the input thread fail for any other reason, the traceback goes to
the crash log (``crash.record``) and the app exits with code 1 and one line.
"""

from __future__ import annotations

import os
import selectors
from codecs import getincrementaldecoder

from rich.text import Text
from textual._loop import loop_last
from textual._parser import ParseError
from textual._xterm_parser import XTermParser
from textual.drivers.linux_driver import LinuxDriver


class InputDriver(LinuxDriver):
    """``LinuxDriver`` whose input thread replaces undecodable bytes and reports its own failure."""

    def _run_input_thread(self) -> None:
        try:
            self.run_input_thread()
        except BaseException as exc:  # noqa: BLE001 - the thread's last stop: the app must learn of it
            from dsvl_tui.core.crash import record

            line, details = record(exc)
            message = Text(line if details is None else f"{line}\n{details}")  # Text: no markup in it
            self._app.call_later(self._app.exit, None, 1, message)

    def run_input_thread(self) -> None:
        """Textual's input loop (``LinuxDriver.run_input_thread``), decoding with ``errors="replace"``."""
        decode = getincrementaldecoder("utf-8")(errors="replace").decode
        parser = XTermParser(self._debug)
        selector = selectors.SelectSelector()
        selector.register(self.fileno, selectors.EVENT_READ)

        def dispatch(ready: list[tuple[selectors.SelectorKey, int]], final: bool = False) -> None:
            for last, (_key, mask) in loop_last(ready):
                if mask & selectors.EVENT_READ:
                    text = decode(os.read(self.fileno, 4096), final=final and last)
                    if not text:  # a pipe at its end
                        break
                    for event in parser.feed(text):
                        self.process_message(event)
            for event in parser.tick():
                self.process_message(event)

        try:
            while not self.exit_event.is_set():
                dispatch(selector.select(0.1))
            selector.unregister(self.fileno)
            dispatch(selector.select(0.1), final=True)
        finally:
            selector.close()
            try:
                for _event in parser.feed(""):
                    pass
            except (EOFError, ParseError):
                pass
