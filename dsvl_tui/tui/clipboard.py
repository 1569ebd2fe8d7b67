"""Copy text to the user's clipboard through the terminal (OSC 52).

Over SSH there is no local clipboard to call; instead the app writes an
OSC 52 sequence and the user's terminal (kitty, iTerm2, WezTerm, Windows
Terminal, foot, Alacritty, xterm with ``allowWindowOps``...) puts the text on
its own clipboard. Terminals that do not support it ignore the sequence.

Inside tmux an application's OSC 52 reaches the outer terminal only with
``set -g set-clipboard on``; tmux's default (``external``) drops it, and
tmux 3.3+ also drops a pass-through-wrapped one unless ``allow-passthrough``
is on. What works with tmux's defaults is to hand the text to tmux itself:
``tmux load-buffer -w -`` (tmux 3.2+) puts it in tmux's paste buffer and
sends it on to the outer terminal's clipboard. ``copy`` is the one path the
TUI takes (``/copy``, a selection, a code block): tmux when ``$TMUX`` says
the app runs inside it, else OSC 52 through the terminal; when tmux can do
neither it says what to set instead of claiming a copy. GNU screen needs
its own pass-through wrapper, which ``osc52`` adds when ``TERM`` says screen.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence

# Many terminals drop longer sequences (xterm and hterm cap near 100 kB of base64).
MAX_BASE64_BYTES = 100_000


class ClipboardError(ValueError):
    """The text cannot be sent through the terminal; ``str()`` is one line."""


def osc52(text: str, *, env: Mapping[str, str] | None = None) -> str:
    """The escape sequence that asks the terminal to put ``text`` on the clipboard."""
    payload = base64.b64encode(text.encode("utf-8")).decode("ascii")
    if len(payload) > MAX_BASE64_BYTES:
        limit = MAX_BASE64_BYTES * 3 // 4 // 1000
        raise ClipboardError(f"too long to copy through the terminal ({len(text):,} characters; about {limit} kB fit)")
    sequence = f"\x1b]52;c;{payload}\x07"
    environ = os.environ if env is None else env
    if environ.get("TERM", "").startswith("screen") and "TMUX" not in environ:
        # screen forwards what sits inside a DCS string; ESC \ ends it.
        sequence = f"\x1bP{sequence}\x1b\\"
    return sequence


def tmux_passthrough(sequence: str) -> str:
    """``sequence`` wrapped for tmux to pass on to the outer terminal as it is (its ESCs doubled)."""
    return "\x1bPtmux;" + sequence.replace("\x1b", "\x1b\x1b") + "\x1b\\"


#: Runs ``tmux ARGS`` with bytes on its standard input; returns its exit status (-1: it could not run) and output.
Tmux = Callable[[Sequence[str], bytes], tuple[int, str]]

SET_CLIPBOARD_HINT = ("inside tmux the copy cannot reach the clipboard: add `set -g set-clipboard on` to "
                      "~/.tmux.conf and run `tmux source ~/.tmux.conf`")


def run_tmux(args: Sequence[str], stdin: bytes = b"") -> tuple[int, str]:
    try:
        done = subprocess.run(["tmux", *args], input=stdin, capture_output=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError):
        return -1, ""
    return done.returncode, done.stdout.decode("utf-8", "replace").strip()


def copy(text: str, write: Callable[[str], None], *, env: Mapping[str, str] | None = None,
         tmux: Tmux | None = None) -> None:
    """Put ``text`` on the user's clipboard; ``write`` sends a sequence to the terminal.

    Raises ``ClipboardError`` (one line) when the text is too long for a
    terminal, or when inside tmux nothing can reach the clipboard.
    """
    sequence = osc52(text, env=env)  # checks the length first, whichever way it goes
    environ = os.environ if env is None else env
    if not environ.get("TMUX"):
        write(sequence)
        return
    tmux = tmux or run_tmux
    status, _ = tmux(["load-buffer", "-w", "-"], text.encode("utf-8"))
    if status == 0:
        return
    if status == -1:  # no tmux command to ask (not on PATH): send what works where it is allowed
        write(sequence + tmux_passthrough(sequence))
        return
    # tmux before 3.2 has no -w: its settings say which way is open.
    status, value = tmux(["show", "-sv", "set-clipboard"], b"")
    if status == 0 and value == "on":
        write(sequence)
        return
    status, value = tmux(["show", "-gv", "allow-passthrough"], b"")
    if status != 0 or value in ("on", "all"):  # no such option before tmux 3.3: it always passed through
        write(tmux_passthrough(sequence))
        return
    raise ClipboardError(SET_CLIPBOARD_HINT)
