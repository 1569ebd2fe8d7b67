"""What a model server streams, read as untrusted input: bounded lines and validated events.

``RemoteStream`` (in ``remote``) reads a server's Server-Sent Events through
these two pieces, so a broken or hostile server can neither crash the client
nor make it write something it could not read back:

- ``bounded_lines`` splits the bytes into lines of at most ``MAX_LINE_BYTES``;
  a longer line ends the answer (``LineTooLong``) instead of growing a buffer
  without end.
- ``parse_event`` turns one ``data:`` payload into an ``Event`` whose every
  field has been checked: the text is a string, a finish reason a short string,
  the usage counts non-negative integers no larger than ``stats.MAX_COUNT``.
  A field that is not, or an event that is not JSON at all, is dropped and
  said once in ``Notes``; an event with an ``error`` ends the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from dsvl_tui.core.stats import MAX_COUNT
from dsvl_tui.core.text import error_line
from engine.errors import EngineError, GenerationError

__all__ = ["MAX_LINE_BYTES", "Event", "LineTooLong", "Notes", "RemoteError", "RemoteStreamError", "bounded_lines",
           "error_message", "parse_event", "reason"]

MAX_LINE_BYTES = 2**20  # one line of the stream; an event of one token is some hundred bytes
_FINISH_CHARS = 64  # a finish reason ("stop", "length", "content_filter") longer than this is not one
_NEWLINE = re.compile(rb"\r\n|\r|\n")  # SSE ends a line with any of the three


class RemoteError(EngineError):
    """The server could not be reached, timed out or refused the request; ``str()`` is one line."""


class RemoteStreamError(GenerationError):
    """The answer's stream broke part way (the connection dropped, the server sent an error)."""


class LineTooLong(Exception):
    """The server sent a line longer than ``MAX_LINE_BYTES``."""


class Notes:
    """One-line notes about what a server sent that was dropped: the first of each kind (a server wrong in
    every event is said once, not a thousand times)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._kinds: set[str] = set()

    def add(self, line: str, kind: str | None = None) -> None:
        kind = line if kind is None else kind
        if kind not in self._kinds:
            self._kinds.add(kind)
            self.lines.append(line)


@dataclass
class Event:
    """One ``data:`` event, checked: only what was valid is here."""

    texts: list[str]  # the new text of each choice, in order
    finish: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None  # the server reported an error: the answer ends with it
    has_choice: bool = False  # it carried a choice (a token, even one without text)


def bounded_lines(chunks: Iterable[bytes], limit: int = MAX_LINE_BYTES) -> Iterator[str]:
    """The lines of a byte stream as text (undecodable bytes U+FFFD), each at most ``limit`` bytes.

    Raises ``LineTooLong`` as soon as a line passes ``limit``, before reading more of it; the parts of a
    line are joined once, so a line sent a byte at a time costs no more than one sent whole.
    """
    parts: list[bytes] = []
    size = 0
    after_cr = False  # the last chunk ended with \r: a \n starting the next one ends no new line
    for chunk in chunks:
        if after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        if chunk:
            after_cr = False
        start = 0
        for match in _NEWLINE.finditer(chunk):
            piece = chunk[start:match.start()]
            if size + len(piece) > limit:
                raise LineTooLong
            parts.append(piece)
            yield b"".join(parts).decode("utf-8", "replace")
            parts, size, start = [], 0, match.end()
            after_cr = match.group() == b"\r" and start == len(chunk)
        rest = chunk[start:]
        if rest:
            size += len(rest)
            if size > limit:
                raise LineTooLong
            parts.append(rest)
    if parts:
        yield b"".join(parts).decode("utf-8", "replace")


def parse_event(data: str, notes: Notes) -> Event:
    """One ``data:`` payload (a chat-completion chunk) as an ``Event``; unusable fields dropped into ``notes``."""
    event = Event(texts=[])
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        notes.add("the server sent an event that is not JSON; it was ignored")
        return event
    if not isinstance(body, dict):
        notes.add("the server sent an event that is not a JSON object; it was ignored")
        return event
    if body.get("error") is not None:
        event.error = error_message(body) or "error"
        return event
    _usage(body.get("usage"), event, notes)
    choices = body.get("choices")
    if choices is None:
        return event
    if not isinstance(choices, list):
        notes.add(f"the server sent 'choices' that are not a list ({_kind(choices)}); ignored", "choices")
        return event
    for choice in choices:
        if not isinstance(choice, dict):
            notes.add(f"the server sent a choice that is not an object ({_kind(choice)}); ignored", "choice")
            continue
        event.has_choice = True
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and 0 < len(finish) <= _FINISH_CHARS and finish.isprintable():
            event.finish = finish
        elif finish is not None:
            notes.add(f"the server sent a finish_reason that is not one ({_kind(finish)}); ignored", "finish")
        delta = choice.get("delta")
        if delta is None:
            continue
        if not isinstance(delta, dict):
            notes.add(f"the server sent a delta that is not an object ({_kind(delta)}); ignored", "delta")
            continue
        text = delta.get("content")
        if isinstance(text, str):
            if text:
                event.texts.append(text)
        elif text is not None:
            notes.add(f"the server sent content that is not text ({_kind(text)}); ignored", "content")
    return event


def _usage(usage: Any, event: Event, notes: Notes) -> None:
    if usage is None:
        return
    if not isinstance(usage, dict):
        notes.add(f"the server sent a usage that is not an object ({_kind(usage)}); ignored", "usage")
        return
    for key in ("prompt_tokens", "completion_tokens"):
        value = usage.get(key)
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
            setattr(event, key, value)
        else:
            notes.add(f"the server's usage.{key} ({_kind(value)}) is not a token count; it was dropped", key)


def _kind(value: Any) -> str:
    """A value from the server, as a note names it: its JSON kind, and a number or short string itself."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        text = str(value) if value.bit_length() < 64 else f"an integer of {len(str(value))} digits"
        return text
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(error_line(value, 20))
    return "a list" if isinstance(value, list) else "an object"


def error_message(body: Any) -> str:
    """The message of an OpenAI error body (``{"error": {"message": ...}}``), FastAPI's ``detail``, or '';
    one line, cut to ``text.ERROR_LIMIT`` characters (a server may send a megabyte of it)."""
    if not isinstance(body, dict):
        return ""
    error = body.get("error", body.get("detail"))
    if isinstance(error, dict):
        error = error.get("message")
    if error is None or error == "":
        return ""
    return error_line(error if isinstance(error, str) else json.dumps(error)[:4096])


def reason(exc: Exception) -> str:
    """Why a connection failed, in a few words."""
    text = str(exc).strip()
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "name resolution" in lowered:
        return "unknown host"
    return " ".join(text.split()) or type(exc).__name__
