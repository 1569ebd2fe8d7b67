"""Copy text to the user's clipboard through the terminal (OSC 52).

Over SSH there is no local clipboard to call; instead the app writes an
OSC 52 sequence and the user's terminal (kitty, iTerm2, WezTerm, Windows
Terminal, foot, Alacritty, xterm with ``allowWindowOps``...) puts the text on
its own clipboard. Terminals that do not support it ignore the sequence.

Inside tmux the sequence reaches the outer terminal when tmux has
``set -g set-clipboard on``; GNU screen needs its own pass-through wrapper,
which ``osc52`` adds when ``TERM`` says screen.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping

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
