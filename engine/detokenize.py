"""Token ids -> text chunks, safely, one token at a time.

Byte-level BPE tokens can end in the middle of a UTF-8 character, so a
token's text is held back until the bytes complete a character. Only a
short window of recent tokens is decoded per step, so the cost per token
does not grow with the length of the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Feed token ids; get back the new complete text after each one."""

    def __init__(self, decode: Callable[[Sequence[int]], str]):
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0  # start of the window decoded for context
        self._read = 0  # tokens up to here have been emitted as text

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if after.endswith(REPLACEMENT) or len(after) <= len(before):
            # An incomplete character, or a token with no text (a special token).
            if len(self._ids) - self._read > 8:  # give up waiting: bytes that never complete
                return self._advance(after[len(before) :])
            return ""
        return self._advance(after[len(before) :])

    def _advance(self, text: str) -> str:
        self._prefix, self._read = self._read, len(self._ids)
        return text

    def flush(self) -> str:
        """Whatever is still held back at the end (an incomplete character shows as U+FFFD)."""
        if self._read == len(self._ids):
            return ""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        self._read = len(self._ids)
        return after[len(before) :]


class StopStringFilter:
    """Passes text through until a stop string appears; the stop string is never emitted.

    Text that could be the start of a stop string is held back until it is
    clearly not one.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if self.stopped:
            return ""
        buffer = self._held + text
        found = [at for at in (buffer.find(stop) for stop in self.stops) if at != -1]
        if found:  # the earliest of the stop strings present, whichever the list names first
            self.stopped = True
            self._held = ""
            return buffer[:min(found)]
        keep = self._longest_partial(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def _longest_partial(self, buffer: str) -> int:
        best = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), 0, -1):
                if buffer.endswith(stop[:size]):
                    best = max(best, size)
                    break
        return best

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held
