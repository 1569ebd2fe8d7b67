"""Opening a conversation the way every command does it: /load, /resume, /find and an upload in ``dsvl-chat web``.

A transcript is read off the event loop, a broken one or a failed read becomes one ``CommandError`` line,
and the front end says what opened, with how many messages and how many pictures are missing. Public
because several command modules share it (``_files``, ``_find``, ``_web``): each imports it, none another.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsvl_tui.commands.builtin._shared import plural
from dsvl_tui.commands.registry import CommandError
from dsvl_tui.commands.session import Session
from dsvl_tui.core.conversation import Conversation
from dsvl_tui.storage import transcript


def read_transcript(path: Path, load: Callable[[], Conversation]) -> Conversation:
    """Run ``load()``; a broken file or a read failure becomes a one-line ``CommandError``."""
    try:
        return load()
    except transcript.TranscriptError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None


def open_with_notice(session: Session, conv: Conversation, what: str) -> None:
    """Show ``conv`` and say ``what`` opened, with its message count and any pictures gone from disk."""
    session.open_conversation(conv)
    missing = transcript.missing_images(conv)
    note = f"; {plural(missing, 'image')} missing (shown, not sent)" if missing else ""
    session.info(f"{what} ({plural(len(conv.messages), 'message')}{note})")


def open_journaled(session: Session, journal: Any, path: Path, title: str,
                   then: Callable[[Conversation], None] | None = None) -> None:
    """Open a journal entry as /resume does (read off the event loop, a copy if another dsvl-chat has it
    open), say so, then ``then(conv)``."""
    def opened(conv: Conversation) -> None:
        copy = " as a copy (it is open in another dsvl-chat; each journals its own)" if conv.id != path.stem else ""
        open_with_notice(session, conv, f"resumed {title}{copy}")
        if then is not None:
            then(conv)

    session.read_then(lambda: read_transcript(path, lambda: journal.open(path.stem)), opened)
