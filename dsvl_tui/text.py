"""Text helpers shared by the front ends."""

from __future__ import annotations

import re

# A whole CSI sequence (7-bit ESC [ or 8-bit 0x9B) or OSC sequence (ESC ] or
# 0x9D, ended by BEL, ESC \ or 0x9C), removed as one piece so that no stray
# parameter bytes such as "[31m" are left in the text.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
)
# Every C0 control but tab and newline, DEL, and every C1 control.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Return ``text`` safe to write to a terminal.

    Model output is untrusted: an escape sequence in it could recolour,
    retitle or clear the user's terminal, move the cursor over earlier text,
    or (on some terminals) write to the clipboard. So every C0 and C1 control
    character except ``\\n`` and ``\\t`` is removed, DEL and carriage return
    included, and whole CSI/OSC sequences are dropped along with their
    parameters. Everything else, non-ASCII text included, is kept as is.
    """
    return _CONTROL.sub("", _SEQUENCE.sub("", text))


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """Return ``text`` with every lone surrogate replaced by U+FFFD.

    A Python ``str`` can hold what no UTF-8 file or tokenizer accepts: bytes
    that were not UTF-8 come in as lone surrogates from ``argv``, stdin and
    prompt-toolkit (``surrogateescape``), and JSON's ``"\\ud800"`` loads as
    one. The edges that take text in call this; a surrogate pair written as
    two code points becomes the character it stands for.
    """
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
