"""The one conversation model: what the UI shows, what transcripts store, what the engine is sent.

Plain dataclasses; importing this module does not import torch (``engine.types``
is torch-free), so the CLI stays fast to start.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from dsvl_tui.core.stats import valid_stats
from dsvl_tui.core.text import shorten
from engine.files import UnusableFileError, open_regular, read_regular, shown_path
from engine.types import EncodedImage, GenerationSettings, GenerationStats, ImageSource, Message

Role = Literal["user", "assistant"]
TITLE_CHARS = 60  # a conversation's title: its first message, cut at a word
# One picture read from a file: as much as a transcript may hold embedded, so whatever is sent can be saved.
MAX_IMAGE_FILE_BYTES = 64 * 2**20
_leaving_out = threading.Lock()  # the journal's thread and the answer's may find a changed picture at once


class LimitError(ValueError):
    """A message the conversation cannot take: longer, or more of them, than a transcript may hold.

    ``str()`` is one line saying what to do. The app never writes a transcript it would refuse to read,
    so the limits are checked here, where messages are made, not when the file is written.
    """


def text_limits() -> tuple[int, int]:
    """(characters one message may hold, messages one conversation may hold): the transcript format's
    limits, read when used (a test lowers them there), so what is made here can always be read back."""
    from dsvl_tui.storage.transcript import format as transcript_format

    return transcript_format.MAX_TEXT_CHARS, transcript_format.MAX_MESSAGES


def image_bytes_limit() -> int:
    """The most bytes one attached picture may have: what a transcript embeds (``/save --embed``)."""
    from dsvl_tui.storage.transcript import format as transcript_format

    return transcript_format.MAX_IMAGE_BYTES


def text_problem(text: str | None, what: str) -> str | None:
    """Why ``text`` cannot be a message (or a system prompt: ``what``), or None when it can."""
    limit = text_limits()[0]
    if text is not None and len(text) > limit:
        return f"{what} is {len(text):,} characters, more than the {limit:,} a transcript may hold; shorten it"
    return None


def cut_text(text: str, limit: int, marker: str) -> str:
    """``text`` if it fits in ``limit`` characters, else its start and then ``marker``, in ``limit`` in all."""
    if len(text) <= limit:
        return text
    return text[: max(limit - len(marker), 0)] + marker[:limit]


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

    Every use of the picture's bytes (the model, a preview, the journal's copy,
    a saved or embedded transcript) goes through ``checked_bytes``: bytes other
    than the ones hashed when it was attached or loaded are never used.
    ``refused`` says why a picture was left out since (``read_or_leave_out``);
    ``told`` once the user has been told (``Conversation.image_notices``).
    """

    path: str | None = None
    sha256: str | None = None
    data: bytes | None = None
    missing: bool = False
    name: str = ""
    stored: str | None = None
    refused: str = ""
    told: bool = False

    @classmethod
    def from_path(cls, path: str | Path) -> Attachment:
        """The attachment for an image file; raises ``ImageError`` for one larger than a transcript can embed
        (``/save --embed`` would write a file that could not be read back), ``OSError`` if unreadable."""
        resolved = Path(path).expanduser().resolve()
        limit = image_bytes_limit()
        if os.stat(resolved).st_size > limit:
            from engine.errors import ImageError

            raise ImageError(f"{resolved.name}: larger than the {limit >> 20} MB a transcript holds for one "
                             "picture; scale it down or save it in a lighter format")
        return cls(path=str(resolved), sha256=file_sha256(resolved), name=resolved.name)

    def checked_bytes(self) -> bytes:
        """The picture's bytes, read once and checked against ``sha256``; the caller uses these, never the path.

        The file (or, once it is deleted, the journal's ``stored`` copy) is read
        whole and hashed: a file changed or swapped (for a link to a key, say)
        since it was attached or loaded has another hash and is refused, so what
        was checked is exactly what is sent or copied. Without a recorded hash
        the first read records it. Raises ``OSError`` (``str()`` one line).
        """
        if self.data is not None:
            return self.data
        problem: OSError | None = None
        for candidate in (self.path, self.stored):
            if not candidate:
                continue
            try:
                data = read_regular(candidate, MAX_IMAGE_FILE_BYTES)
            except FileNotFoundError as error:  # deleted since: the stored copy stands in
                problem = problem or error
                continue
            except ValueError:  # a NUL in the path
                raise UnusableFileError(candidate.replace("\0", "?"), "not a usable file path") from None
            digest = hashlib.sha256(data).hexdigest()
            if self.sha256 is None:
                self.sha256 = digest
            if digest != self.sha256:
                raise UnusableFileError(candidate, "changed since it was attached or loaded (its SHA-256 no longer "
                                                   "matches)")
            return data
        raise problem or UnusableFileError(self.label, "has no file")

    def read_or_leave_out(self) -> bytes | None:
        """``checked_bytes``, or None once the picture cannot be used: it is then marked missing (not sent,
        not copied, saved as a reference) and why is kept in ``refused`` for one notice."""
        if self.missing:
            return None
        try:
            return self.checked_bytes()
        except OSError as error:
            with _leaving_out:
                if not self.missing:
                    self.missing = True
                    self.refused = _reason(error)
            return None

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


def _reason(error: OSError) -> str:
    """One line for why a picture could not be read: what went wrong, then the file."""
    if isinstance(error, UnusableFileError):
        return str(error)
    reason = error.strerror or str(error) or type(error).__name__
    return f"{reason}: {shown_path(error.filename)}" if error.filename else reason


def new_message_id() -> str:
    """A message's id: unique within its conversation (branches refer to the message they follow by it)."""
    return os.urandom(8).hex()


def side_label(model: str, endpoint: str = "", quantize: str = "none",
               settings: dict[str, object] | None = None) -> str:
    """How a model is named beside its answer (``/compare``): a local folder by its last part, then where it
    runs, its quantization and the settings of its own."""
    name = Path(model).name if model and Path(model).is_absolute() else model
    parts = [f"at {endpoint}"] if endpoint else []
    if quantize != "none":
        parts.append(quantize)
    parts += [f"{key}={'random' if value is None else value}" for key, value in (settings or {}).items()]
    return f"{name or 'the model'}" + (f" ({', '.join(parts)})" if parts else "")


@dataclass
class ComparedAnswer:
    """The second model's answer to the same message (``/compare``, ``ask --compare``): who answered, with
    which settings, and how it went. Its side of the conversation sees these answers, not the main ones."""

    model: str
    text: str
    endpoint: str = ""  # the server that answered (no credentials); "" for a model loaded here
    quantize: str = "none"  # a local model's weights: none, int8 or int4
    settings: GenerationSettings | None = None  # what it answered with; None: the conversation's
    stats: GenerationStats | None = None
    stopped: bool = False
    error: str | None = None


@dataclass
class ChatMessage:
    role: Role
    text: str
    images: list[Attachment] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    stats: GenerationStats | None = None  # answers only
    stopped: bool = False  # the user stopped this answer
    error: str | None = None  # the answer failed with this error
    id: str = field(default_factory=new_message_id)
    compared: ComparedAnswer | None = None  # answers only: the compared model's answer (/compare)


@dataclass
class Conversation:
    """One pane's conversation: messages, system prompt, settings, pending images.

    ``messages`` is the current path: what is shown, sent to the model and exported. /edit and /regenerate
    keep what they replace as a branch: ``alternatives`` holds every message off the current path under the
    id of the message it follows (``""``: a first message). ``core.branches`` lists and switches them.
    """

    messages: list[ChatMessage] = field(default_factory=list)
    alternatives: dict[str, list[ChatMessage]] = field(default_factory=dict)
    system: str | None = None  # None: the model's default system prompt
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    model: str = ""
    endpoint: str = ""  # the server that answered last (--endpoint, without credentials); "" for a local model
    quantize: str = "none"  # the local model's weights when it answered last: none, int8 or int4 (--quantize)
    layout: str = ""  # the local model's checkpoint layout when it answered last (engine.types.LAYOUTS); "" unknown
    title: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    path: Path | None = None  # the transcript file it was saved to or loaded from
    # ``path`` as this program last wrote or read it (atomic.FileStamp): /save refuses to replace
    # a file someone else changed since.
    path_stamp: tuple[int, int, int] | None = None
    pending: list[Attachment] = field(default_factory=list)  # images for the next message
    # The id of the message whose siblings the branch keys step through: the last one made or stepped to.
    branch_focus: str | None = field(default=None, repr=False, compare=False)

    def touch(self) -> None:
        self.updated = time.time()

    def __repr__(self) -> str:
        # Short whatever the conversation holds: Textual names each worker by the repr of its arguments, on
        # the event loop, and a 20 MB transcript's full repr froze the app for most of a second per turn.
        return f"Conversation(id={self.id!r}, {len(self.messages)} messages, {len(self.pending)} pending)"

    @property
    def is_empty(self) -> bool:
        return not self.messages and not self.pending and not self.alternatives  # after /edit 1: only branches

    def add_user(self, text: str) -> ChatMessage:
        """Append the user's message with the pending images (which are then cleared).

        Raises ``LimitError`` (and changes nothing) for a text longer than a transcript's message, or
        when the conversation has no room left for the message and its answer.
        """
        problem = text_problem(text, "the message")
        if problem:
            raise LimitError(problem)
        self.make_room(2)
        message = ChatMessage("user", text, images=list(self.pending))
        self.pending.clear()
        self._append(message)
        if not self.title:
            self.title = shorten(text, TITLE_CHARS) or "image"
        self.touch()
        return message

    def message_count(self) -> int:
        """Every message a transcript of this conversation holds: the current path and its branches."""
        return len(self.messages) + sum(len(kept) for kept in self.alternatives.values())

    def make_room(self, count: int) -> None:
        """Raise ``LimitError`` unless ``count`` more messages fit in a transcript (branches count too)."""
        most, held = text_limits()[1], self.message_count()
        if held + count > most:
            counted = " (its branches included)" if self.alternatives else ""
            raise LimitError(f"this conversation holds {held:,} messages{counted}, and a transcript at most "
                             f"{most:,}; /new starts another")

    def add_answer(self, text: str, stats: GenerationStats | None = None, *, stopped: bool = False,
                   error: str | None = None) -> ChatMessage:
        """Append an answer as a transcript can hold it, whatever the backend (a server) sent.

        A text longer than a transcript's message is cut there and says so at its end (the start is kept
        readable); the stats are made valid (``stats.valid_stats``); an error too long is cut the same way.
        """
        limit = text_limits()[0]
        text = cut_text(text, limit, f"\n\n[answer cut at {limit:,} characters, the most a transcript holds]")
        if error is not None:
            error = cut_text(error, limit, " [cut]")
        message = ChatMessage("assistant", text, stats=valid_stats(stats), stopped=stopped, error=error)
        self._append(message)
        self.touch()
        return message

    def _append(self, message: ChatMessage) -> None:
        """Add ``message`` to the path. Where the path forks (``core.branches``) it is made at least 2 ms after
        its siblings: they are ordered by ``created``, which a transcript keeps to the millisecond."""
        kept = self.alternatives.get(self.messages[-1].id if self.messages else "")
        if kept:
            message.created = max(message.created, max(sibling.created for sibling in kept) + 0.002)
        self.messages.append(message)

    def engine_messages(self, *, compared: bool = False) -> list[Message]:
        """The history as the engine takes it; missing images and failed empty answers left out.

        ``compared``: the history as the compared model (``/compare``) sees it: its own answers where it
        gave one, so each side of a compared conversation continues its own.

        Pictures go as their checked bytes (``Attachment.read_or_leave_out``): one
        changed since it was attached or loaded is left out, and
        ``image_notices`` then says so once.
        """
        out = []
        for m in self.messages:
            text, error = m.text, m.error
            if compared and m.compared is not None:
                text, error = m.compared.text, m.compared.error
            if m.role == "assistant" and error and not text:
                continue
            images: list[ImageSource] = []
            for attachment in m.images:
                data = attachment.read_or_leave_out()
                if data is not None:
                    images.append(EncodedImage(data, name=attachment.label))
            out.append(Message(m.role, text, images=images))
        return out

    def image_notices(self) -> list[str]:
        """One line per picture left out since it was attached or loaded, each returned once (to show)."""
        lines = []
        with _leaving_out:
            for message in self.messages:
                for attachment in message.images:
                    if attachment.refused and not attachment.told:
                        attachment.told = True
                        lines.append(f"image {shown_path(attachment.label)} left out (not sent to the model, "
                                     f"not copied): {attachment.refused}")
        return lines

    def _last_user_index(self) -> int | None:
        for index in range(len(self.messages) - 1, -1, -1):
            if self.messages[index].role == "user":
                return index
        return None

    def undo(self) -> list[ChatMessage]:
        """Drop the last turn (the last user message and what follows it); returns what was dropped.

        Branches that followed a dropped message go with it; the dropped turn is not kept as one."""
        from dsvl_tui.core.branches import prune

        index = self._last_user_index()
        if index is None:
            dropped, self.messages = self.messages, []
        else:
            dropped, self.messages = self.messages[index:], self.messages[:index]
        prune(self)
        self.touch()
        return dropped

    def take_back(self, asked: ChatMessage) -> bool:
        """The backend refused to answer ``asked`` (the last message) before generating anything.

        A question answered before (``/regenerate``) stays, and its newest kept answer is shown again:
        returns False. A new question is dropped and True returned (its text and pictures go back to the
        input); where it had replaced another version (``/edit``), the version it replaced is shown
        again. Nothing kept as a branch is lost either way."""
        from dsvl_tui.core.branches import ROOT, Tree, set_path

        if not self.messages or self.messages[-1] is not asked:
            return False
        if self.alternatives.get(asked.id):
            tree = Tree(self)
            set_path(self, tree.down_from(asked.id), tree)
            return False
        self.undo()
        end = self.messages[-1].id if self.messages else ROOT
        if self.alternatives.get(end):
            tree = Tree(self)
            set_path(self, tree.down_from(end), tree)  # ROOT too: from the start, the version written last
        return True

    def for_regenerate(self) -> bool:
        """Set the answer(s) after the last user message aside, kept as a branch, so it can be answered again.

        An answer that failed without a word is dropped instead. Raises ``LimitError`` when a transcript
        has no room for another answer."""
        from dsvl_tui.core.branches import detach

        index = self._last_user_index()
        if index is None:
            return False
        tail = self.messages[index + 1:]
        failed = len(tail) == 1 and bool(tail[0].error) and not tail[0].text
        self.make_room(0 if failed else 1)
        if failed:
            del self.messages[index + 1:]
        detach(self, index + 1)
        self.touch()
        return True

    def reset(self) -> None:
        self.messages.clear()
        self.alternatives.clear()
        self.pending.clear()
        self.touch()

    def copy(self) -> Conversation:
        """A snapshot (for the journal's thread): its own lists, the same messages."""
        return replace(self, messages=list(self.messages), pending=list(self.pending),
                       alternatives={parent: list(kept) for parent, kept in self.alternatives.items()})

    def with_partial_answer(self, text: str) -> Conversation:
        """A copy with ``text`` appended as a stopped answer: what to journal while an answer streams,
        so a quit or a kill keeps what was generated (as if the user had stopped it there)."""
        snapshot = self.copy()
        snapshot.add_answer(text, stopped=True)
        return snapshot

    def last_answer(self) -> ChatMessage | None:
        return next((m for m in reversed(self.messages) if m.role == "assistant"), None)
