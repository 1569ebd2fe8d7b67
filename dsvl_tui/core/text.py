"""Text helpers shared by the front ends.

``printable`` is the one sanitiser: every string that comes from a file, a
file name, the model or a transcript passes through it on its way to a
widget, a label, a notification or a terminal write.
"""

from __future__ import annotations

import re

ERROR_LIMIT = 300  # characters of an error line, past which it is cut

# Escape sequences, each matched whole so that no parameter bytes ("[31m",
# "]0;title") are left behind as text:
# - a control string: OSC (ESC ] or 0x9D), DCS (ESC P, 0x90), SOS (ESC X,
#   0x98), PM (ESC ^, 0x9E) or APC (ESC _, 0x9F), up to its terminator: BEL,
#   ST (ESC \ or 0x9C), or whatever a terminal ends it with instead (CAN, SUB,
#   or an ESC starting another sequence, matched next); unterminated, up to
#   the end of the text;
# - a CSI (ESC [ or 0x9B) with its parameters and final byte, if any;
# - any other escape: ESC, intermediate bytes, one final byte (ESC c resets
#   the terminal, ESC ( 0 switches the character set).
_SEQUENCE = re.compile(
    r"(?:\x1b[]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x18\x1a\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|\x1b[ -/]*[0-~]?"
)
# Every C0 control but tab and newline, DEL, and every C1 control.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Half of a UTF-16 surrogate pair: not a character; no terminal can be sent one.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Any of the above: most text has none, and is returned after one scan.
_SUSPECT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(text: str) -> str:
    """Return ``text`` safe to show: in a widget, a notification or a terminal.

    Text from the model, a transcript or a file name is untrusted: an escape
    sequence in it could recolour, retitle or clear the user's terminal, move
    the cursor over earlier text, or (on many terminals) write the clipboard.
    So every escape sequence is removed whole (see ``_SEQUENCE``), whatever
    ends it and even if nothing does, and then every C0 and C1 control
    character except ``\\n`` and ``\\t``, DEL and carriage return included.

    The result is also valid Unicode: a surrogate pair (as left by some JSON)
    becomes the character it encodes and a lone surrogate (a file name that
    is not UTF-8, read with ``surrogateescape``) becomes U+FFFD, so it can be
    encoded for the terminal. Everything else is kept as is.
    """
    if not _SUSPECT.search(text):
        return text
    return valid_text(_CONTROL.sub("", _SEQUENCE.sub("", text)))


def valid_text(text: str) -> str:
    """Return ``text`` as valid Unicode: lone surrogates become U+FFFD, nothing else changes.

    For the edges that take text in (argv, stdin, the REPL's and the TUI's
    keyboard, transcripts): bytes that were not UTF-8 arrive as lone
    surrogates (``surrogateescape``), and JSON's ``"\\ud800"`` loads as one;
    no UTF-8 file or tokenizer accepts them. A surrogate pair written as two
    code points becomes the character it stands for. Controls are kept (a
    message may hold tabs and newlines); ``printable`` is for display.
    """
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def error_line(error: BaseException | str, limit: int = ERROR_LIMIT) -> str:
    """An error as one line for the user: every run of whitespace becomes one space.

    A string is cut to ``limit`` characters. An ``engine.EngineError`` is the
    engine's own message, written for the user, and kept whole (its type's
    name if it has none); any other exception is ``"TypeName: message"`` cut
    to ``limit``, or its type's name alone. The one helper for error lines in
    ``dsvl_tui`` (``engine`` keeps its own, as it imports nothing from here).
    """
    if isinstance(error, str):
        return " ".join(error.split())[:limit]
    from engine.errors import EngineError

    text = " ".join(str(error).split())
    if isinstance(error, EngineError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}"[:limit] if text else type(error).__name__


def shorten(text: str, limit: int) -> str:
    """``text`` on one line (each run of whitespace one space) in at most ``limit`` characters.

    A longer text is cut after its last word that fits and ends with an ellipsis (``…``); it is
    cut inside a word only when that word alone takes more than half of ``limit``. For titles.
    """
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    if limit < 2:
        return "\u2026"[:limit]
    space = line.rfind(" ", 0, limit)  # the cut keeps line[:space] and adds one character
    kept = line[:space] if space >= limit // 2 else line[:limit - 1]
    return kept.rstrip(" ,;:-") + "\u2026"
