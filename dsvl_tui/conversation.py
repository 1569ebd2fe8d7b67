"""The one conversation model: what the UI shows, what transcripts store, what the engine is sent.

Plain dataclasses; importing this module does not import torch (``engine.types``
is torch-free), so the CLI stays fast to start.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from dsvl_tui.text import shorten
from engine.files import open_regular
from engine.types import GenerationSettings, GenerationStats, Message

Role = Literal["user", "assistant"]
TITLE_CHARS = 60  # a conversation's title: its first message, cut at a word


def file_sha256(path: Path) -> str:
    """sha256 of a regular file's bytes; a FIFO or device raises ``OSError`` rather than hanging."""
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Attachment:
    """An image attached to a message.

    ``path`` is where the bytes live on disk; ``data`` holds them in memory
    when they came embedded in a transcript. ``missing`` marks an image a
    transcript refers to that could not be found or failed its hash check:
    the message keeps it (shown as missing) but it is not sent to the model.
    ``stored`` is a copy of the same bytes kept elsewhere (autosave's, in the
    journal): it stands in for ``path`` once the original file is deleted.
    """

    path: str | None = None
    sha256: str | None = None
    data: bytes | None = None
    missing: bool = False
    name: str = ""
    stored: str | None = None

    @classmethod
    def from_path(cls, path: str | Path) -> Attachment:
        resolved = Path(path).expanduser().resolve()
        return cls(path=str(resolved), sha256=file_sha256(resolved), name=resolved.name)

    def engine_source(self):
        """What ``engine.Message.images`` takes: a path, or an ``EncodedImage`` of the embedded bytes.

        The bytes, not a PIL image: opening one here, for every picture of the history on every
        turn, decoded an ICO's frame whatever its size; the engine opens them with its checks."""
        if self.data is not None:
            from engine.types import EncodedImage

            return EncodedImage(self.data, name=self.name or "embedded image")
        return self.usable_path()

    def usable_path(self) -> str | None:
        """``path``, or the stored copy when the original file has gone (deleted after attaching)."""
        if self.path and self.stored and not os.path.exists(self.path) and os.path.exists(self.stored):
            return self.stored
        return self.path

    def recover(self) -> bool:
        """Point ``path`` at the stored copy if the original has gone; True if it did."""
        usable = self.usable_path()
        if usable == self.path:
            return False
        self.path = usable
        return True

    @property
    def label(self) -> str:
        return self.name or (Path(self.path).name if self.path else "image")


@dataclass
class ChatMessage:
    role: Role
    text: str
    images: list[Attachment] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    stats: GenerationStats | None = None  # answers only
    stopped: bool = False  # the user stopped this answer
    error: str | None = None  # the answer failed with this error


@dataclass
class Conversation:
    """One pane's conversation: messages, system prompt, settings, pending images."""

    messages: list[ChatMessage] = field(default_factory=list)
    system: str | None = None  # None: the model's default system prompt
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    model: str = ""
    endpoint: str = ""  # the server that answered last (--endpoint, without credentials); "" for a local model
    quantize: str = "none"  # the local model's weights when it answered last: none, int8 or int4 (--quantize)
    title: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    path: Path | None = None  # the transcript file it was saved to or loaded from
    # ``path`` as this program last wrote or read it (atomic.FileStamp): /save refuses to replace
    # a file someone else changed since.
    path_stamp: tuple[int, int, int] | None = None
    pending: list[Attachment] = field(default_factory=list)  # images for the next message

    def touch(self) -> None:
        self.updated = time.time()

    def __repr__(self) -> str:
        # Short whatever the conversation holds: Textual names each worker by the repr of its arguments, on
        # the event loop, and a 20 MB transcript's full repr froze the app for most of a second per turn.
        return f"Conversation(id={self.id!r}, {len(self.messages)} messages, {len(self.pending)} pending)"

    @property
    def is_empty(self) -> bool:
        return not self.messages and not self.pending

    def add_user(self, text: str) -> ChatMessage:
        """Append the user's message with the pending images (which are then cleared)."""
        message = ChatMessage("user", text, images=list(self.pending))
        self.pending.clear()
        self.messages.append(message)
        if not self.title:
            self.title = shorten(text, TITLE_CHARS) or "image"
        self.touch()
        return message

    def add_answer(self, text: str, stats: GenerationStats | None = None, *, stopped: bool = False,
                   error: str | None = None) -> ChatMessage:
        message = ChatMessage("assistant", text, stats=stats, stopped=stopped, error=error)
        self.messages.append(message)
        self.touch()
        return message

    def engine_messages(self) -> list[Message]:
        """The history as the engine takes it; missing images and failed empty answers left out."""
        out = []
        for m in self.messages:
            if m.role == "assistant" and m.error and not m.text:
                continue
            out.append(Message(m.role, m.text, images=[a.engine_source() for a in m.images if not a.missing]))
        return out

    def _last_user_index(self) -> int | None:
        for index in range(len(self.messages) - 1, -1, -1):
            if self.messages[index].role == "user":
                return index
        return None

    def undo(self) -> list[ChatMessage]:
        """Drop the last turn (the last user message and what follows it); returns what was dropped."""
        index = self._last_user_index()
        if index is None:
            dropped, self.messages = self.messages, []
        else:
            dropped, self.messages = self.messages[index:], self.messages[:index]
        self.touch()
        return dropped

    def for_regenerate(self) -> bool:
        """Drop the answer(s) after the last user message so it can be answered again."""
        index = self._last_user_index()
        if index is None:
            return False
        del self.messages[index + 1 :]
        self.touch()
        return True

    def reset(self) -> None:
        self.messages.clear()
        self.pending.clear()
        self.touch()

    def copy(self) -> Conversation:
        return replace(self, messages=list(self.messages), pending=list(self.pending))

    def with_partial_answer(self, text: str) -> Conversation:
        """A copy with ``text`` appended as a stopped answer: what to journal while an answer streams,
        so a quit or a kill keeps what was generated (as if the user had stopped it there)."""
        snapshot = self.copy()
        snapshot.add_answer(text, stopped=True)
        return snapshot

    def last_answer(self) -> ChatMessage | None:
        return next((m for m in reversed(self.messages) if m.role == "assistant"), None)
