"""Autosave: every conversation journaled to the data folder as it goes.

The front ends call ``Journal.record(conv)`` after each user message and each
finished answer. Each conversation is one transcript file, ``<id>.json``,
rewritten atomically, so a crash, a dropped SSH session or ``kill -9`` loses
at most the answer being generated. Its images are copied once, by content
hash, into ``<id>.images/`` beside it (and their original paths kept as
``source``), so the journal survives the originals being deleted.

    journal = Journal()                    # data_dir()/journal
    problem = journal.record(conv)         # None, or a one-line message to show
    for entry in journal.recent():         # newest first
        print(entry.title, entry.message_count)
    conv = journal.open(entry)             # same id: recording it again updates the entry
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write_bytes, is_temp_file
from .conversation import Conversation
from .paths import data_dir
from .transcript_format import FORMAT, TranscriptError, one_line, parse_time
from .transcript_read import read
from .transcript_write import ImageFolder, document, encode

STALE_TEMP_SECONDS = 3600  # temporary files older than this were left by a killed writer


@dataclass(frozen=True)
class JournalEntry:
    """One journaled conversation, as listed by ``Journal.recent``."""

    path: Path
    title: str
    updated: float  # epoch seconds of its last change
    message_count: int
    model: str = ""

    @property
    def id(self) -> str:
        return self.path.stem


class Journal:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else data_dir() / "journal"
        self._stored: dict[str, dict[str, str]] = {}  # file id -> {sha256: image file already copied}
        self._lock = threading.Lock()

    def path_for(self, conv_id: str) -> Path:
        return self.directory / f"{_file_id(conv_id)}.json"

    def record(self, conv: Conversation) -> str | None:
        """Journal ``conv`` now; return None, or a one-line message if the disk refused.

        A conversation with no messages has its entry removed. ``conv`` itself
        is never changed.
        """
        try:
            with self._lock:
                self._record(conv)
        except TranscriptError as error:
            return f"autosave failed: {error}"
        except OSError as error:
            return one_line(f"autosave failed ({self.directory}): {error.strerror or error}")
        except Exception as error:  # noqa: BLE001 - autosave must never take the conversation down with it
            return one_line(f"autosave failed: {type(error).__name__}: {error}")
        return None

    def _record(self, conv: Conversation) -> None:
        path = self.path_for(conv.id)
        if not conv.messages:
            self._remove(path)
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = path.stem
        images = ImageFolder(self.directory / f"{key}.images", f"{key}.images/", source=True,
                             known=self._stored.setdefault(key, {}))
        doc = document(conv, images.entry, updated=conv.updated)
        if conv.path is not None:
            doc["saved_path"] = str(conv.path)
        atomic_write_bytes(path, encode(doc))

    def recent(self, limit: int = 20) -> list[JournalEntry]:
        """The journaled conversations, newest first; unreadable entries are skipped."""
        try:
            names = list(self.directory.iterdir())
        except OSError:
            return []
        dated = []
        for path in names:
            try:
                if is_temp_file(path):
                    if time.time() - path.stat().st_mtime > STALE_TEMP_SECONDS:
                        path.unlink()
                elif path.suffix == ".json":
                    dated.append((path.stat().st_mtime, path))
            except OSError:
                continue
        entries = []
        for _, path in sorted(dated, reverse=True):
            entry = _entry(path)
            if entry is not None:
                entries.append(entry)
                if len(entries) >= limit:
                    break
        return sorted(entries, key=lambda e: e.updated, reverse=True)

    def open(self, entry_or_id: JournalEntry | str) -> Conversation:
        """The journaled conversation, with its id (so recording it updates the same entry).

        ``conv.path`` is where it was last saved by the user, if anywhere,
        never the journal file. Raises ``TranscriptError``.
        """
        path = entry_or_id.path if isinstance(entry_or_id, JournalEntry) else self.path_for(str(entry_or_id))
        conv, _, value = read(path)
        conv.id = path.stem
        saved = value.get("saved_path") if isinstance(value, dict) else None
        conv.path = Path(saved) if isinstance(saved, str) and saved and "\0" not in saved else None
        return conv

    def forget(self, conv_id: JournalEntry | str) -> None:
        """Remove a conversation's entry and its image copies (nothing else is touched)."""
        path = conv_id.path if isinstance(conv_id, JournalEntry) else self.path_for(str(conv_id))
        with self._lock:
            self._remove(path)

    def _remove(self, path: Path) -> None:
        self._stored.pop(path.stem, None)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        shutil.rmtree(path.with_suffix(".images"), ignore_errors=True)


def _file_id(conv_id: str) -> str:
    """A conversation id usable as a file name (ids are uuid hex; anything else is hashed)."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", conv_id):
        return conv_id
    return hashlib.sha256(conv_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _entry(path: Path) -> JournalEntry | None:
    """A summary of one journal file without checking its images; None if it is not a transcript."""
    try:
        with open(path, "rb") as handle:
            doc = json.loads(handle.read())
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("messages"), list):
            return None
        messages = doc["messages"]
        updated = parse_time(doc["updated"]) if isinstance(doc.get("updated"), str) else os.stat(path).st_mtime
        title = doc.get("title") if isinstance(doc.get("title"), str) else ""
        model = doc.get("model") if isinstance(doc.get("model"), str) else ""
        return JournalEntry(path, title, updated, len(messages), model)
    except (OSError, ValueError, OverflowError, RecursionError):
        return None
