"""One answer, start to end, for the line-based front ends (the REPL and ``ask``).

``stream_answer`` sends a conversation to a backend, hands each text chunk to
a callback as it arrives and records the answer in the conversation, whatever
way it ends: complete, stopped by the user, or failed part way. Input
problems (a bad image, a turn too long for the context window) raise
``engine.EngineError`` from the backend before anything is generated, and
nothing is recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from dsvl_tui.conversation import ChatMessage, Conversation
from engine.errors import GenerationError
from engine.types import ChatBackend, GenerationStats

_ENDINGS = {
    "eos": "",
    "stop_string": "",
    "length": "stopped at max_new_tokens",
    "cancelled": "stopped",
    "error": "failed",
}


def stream_answer(backend: ChatBackend, conversation: Conversation, *, cancel: threading.Event,
                  on_chunk: Callable[[str], None]) -> ChatMessage:
    """Answer the conversation's last user message; returns the answer it appended."""
    stream = backend.stream(conversation.engine_messages(), conversation.settings, system=conversation.system,
                            cancel=cancel, cache_key=conversation.id)
    parts: list[str] = []
    chunks = iter(stream)
    try:
        for chunk in chunks:
            parts.append(chunk)
            on_chunk(chunk)
    except GenerationError as exc:
        return conversation.add_answer("".join(parts), stream.stats, error=str(exc))
    except KeyboardInterrupt:
        cancel.set()
        _close(chunks)  # waits for the worker, so the stats are final
        conversation.add_answer("".join(parts), stream.stats, stopped=True)
        raise
    finally:
        _close(chunks)
    stats = stream.stats
    return conversation.add_answer("".join(parts), stats, stopped=stats.stop_reason == "cancelled")


def _close(chunks) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def stats_line(stats: GenerationStats | None) -> str:
    """``"42 tokens · 31.0 tok/s · first token 0.41 s"`` plus how it ended when that is news."""
    if stats is None:
        return ""
    parts = [f"{stats.new_tokens} token{'s' if stats.new_tokens != 1 else ''}"]
    if stats.tokens_per_second:
        parts.append(f"{stats.tokens_per_second:.1f} tok/s")
    if stats.time_to_first_token is not None:
        parts.append(f"first token {stats.time_to_first_token:.2f} s")
    ending = _ENDINGS.get(stats.stop_reason or "", "")
    if ending:
        parts.append(ending)
    if stats.dropped_turns:
        turns = "turn" if stats.dropped_turns == 1 else "turns"
        parts.append(f"{stats.dropped_turns} oldest {turns} left out to fit the context window")
    return " · ".join(parts)
