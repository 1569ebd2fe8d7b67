"""The plain REPL's terminal: is it one, does it take colour, keys while an answer streams, help lines."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any, TextIO


def colour_terminal(stream: TextIO) -> bool:
    """True for a terminal that takes colour: a TTY, ``TERM`` set and not dumb, no ``NO_COLOR``."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    term = os.environ.get("TERM", "")
    return tty and term not in ("", "dumb") and not os.environ.get("NO_COLOR")


@contextlib.contextmanager
def interrupt_sets(cancel: threading.Event) -> Iterator[None]:
    """While answering, Ctrl+C (SIGINT) sets ``cancel`` instead of raising."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: cancel.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def keys_not_echoed(*streams: Any) -> Iterator[None]:
    """While an answer streams, the terminal does not echo keys: Ctrl+C's ``^C`` (or anything
    typed) would move the cursor under the printer's live tail, which is then erased from the
    wrong row and drawn twice. What is typed stays in the terminal's buffer for the next prompt.
    ``streams``: the first that is a terminal is the one set."""
    terminal = next((s for s in streams if isatty(s)), None)
    try:
        import termios
    except ImportError:  # Windows
        termios = None  # type: ignore[assignment]
    before = None
    if termios is not None and terminal is not None:
        try:
            fd = terminal.fileno()
            before = termios.tcgetattr(fd)
        except (AttributeError, OSError, ValueError, termios.error):
            before = None
    if termios is None or before is None:
        yield
        return
    quiet = list(before)
    quiet[3] &= ~termios.ECHO
    try:
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
    except (OSError, termios.error):
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(fd, termios.TCSANOW, before)


def wrap_items(text: str, width: int) -> str:
    """Each line of ``text`` (items joined by `` · ``) packed into lines of at most ``width`` columns,
    broken between items (inside one only if it is longer than a line); continuations indented."""
    import textwrap

    packed = []
    for line in text.splitlines():
        current = ""
        for item in line.split(" \u00b7 "):
            joined = f"{current} \u00b7 {item}" if current else item
            if len(joined) <= width or not current:
                current = joined
            else:
                packed.append(current)
                current = "  " + item
        packed.append(current)
    return "\n".join(wrapped for line in packed
                     for wrapped in textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False) or [""])


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
