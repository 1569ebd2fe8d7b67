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

Each write also updates the search index (``search_index.SearchIndex``, for
``/find``): at once, or with ``record(conv, index=False)`` later, when the
caller calls ``update_index()`` (the autosave worker, once the app has its
answer). An index that cannot be written is left behind: the next search
brings it back in line with the files.

One running dsvl-chat at a time journals a conversation: the first to open or
record it takes an OS lock on ``<id>.lock`` beside the entry (``flock``;
``msvcrt.locking`` on Windows), held while the program runs and released by
the OS when it ends, even by ``kill -9``. Another program opening the entry
then gets a copy under a new id, with its own entry and image folder.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from dsvl_tui.core.branches import all_messages
from dsvl_tui.core.conversation import Attachment, Conversation
from dsvl_tui.storage.atomic import atomic_write_bytes, is_temp_file
from dsvl_tui.storage.paths import data_dir
from dsvl_tui.storage.search_index import Record, SearchIndex
from dsvl_tui.storage.transcript.format import FORMAT, MAX_FILE_BYTES, TranscriptError, one_line, parse_time
from dsvl_tui.storage.transcript.read import read
from dsvl_tui.storage.transcript.write import ImageFolder, document, encode
from engine.files import read_regular

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

STALE_TEMP_SECONDS = 3600  # temporary files older than this were left by a killed writer
SWEEP_TEMP_SECONDS = 60  # at start-up, temporary files of ours older than this are swept


class EntryLocked(Exception):
    """Another running dsvl-chat journals this conversation."""


@dataclass(frozen=True)
class JournalEntry:
    """One journaled conversation, as listed by ``Journal.recent``."""

    path: Path
    title: str
    updated: float  # epoch seconds of its last change
    message_count: int
    model: str = ""
    first_image: str = ""  # the name of the first image attached, "" if none

    @property
    def id(self) -> str:
        return self.path.stem


class Journal:
    def __init__(self, directory: Path | None = None, *, index: SearchIndex | None = None) -> None:
        """``index``: the search index to keep up to date; by default the data folder's, for the default
        ``directory`` (a journal elsewhere, as tests make, has none unless given one)."""
        self.directory = Path(directory) if directory is not None else data_dir() / "journal"
        self.index = index if index is not None or directory is not None else SearchIndex(journal_dir=self.directory)
        self._stored: dict[str, dict[str, str]] = {}  # file id -> {sha256: image file already copied}
        self._lock = threading.Lock()
        self._unindexed: dict[Path, tuple[Record, os.stat_result] | None] = {}  # written (None: removed) since

    def path_for(self, conv_id: str) -> Path:
        return self.directory / f"{_file_id(conv_id)}.json"

    def record(self, conv: Conversation, *, index: bool = True) -> str | None:
        """Journal ``conv`` now; return None, or a one-line message if the disk refused.

        A conversation with no messages (on no branch) has its entry removed. ``conv`` itself
        is never changed, except that its attachments learn where their copy is
        kept (``Attachment.stored``), which stands in for a deleted original.
        ``index=False`` leaves the search index to a later ``update_index()``.
        """
        try:
            with self._lock:
                self._record(conv)
            if index:
                self.update_index()
        except EntryLocked:
            return ("autosave paused: this conversation is open in another dsvl-chat; "
                    "/save FILE keeps this one, or close the other")
        except TranscriptError as error:
            return f"autosave failed: {error}"
        except OSError as error:
            return one_line(f"autosave failed ({self.directory}): {error.strerror or error}")
        except Exception as error:  # noqa: BLE001 - autosave must never take the conversation down with it
            return one_line(f"autosave failed: {type(error).__name__}: {error}")
        return None

    def _record(self, conv: Conversation) -> None:
        path = self.path_for(conv.id)
        if not conv.messages and not conv.alternatives:  # /edit of the first message leaves branches only
            self._remove(path)
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = path.stem
        if not _lock(self._lock_path(key)):
            raise EntryLocked(key)
        folder = self.directory / f"{key}.images"
        images = ImageFolder(folder, f"{key}.images/", source=True, known=self._stored.setdefault(key, {}))
        stored: list[tuple[Attachment, str]] = []

        def entry(att: Attachment) -> dict:
            image = images.entry(att)
            if image.get("sha256") in images.known and isinstance(image.get("path"), str):
                stored.append((att, str(self.directory / image["path"])))
            return image

        doc = document(conv, entry, updated=conv.updated)
        if conv.path is not None:
            doc["saved_path"] = str(conv.path)
        atomic_write_bytes(path, encode(doc))
        for att, copy in stored:  # only once the entry that keeps the copy is written
            att.stored = copy
        if self.index is not None:
            record = Record.of_document(doc)
            if record is not None:
                # Its compared answers too (``Record.compared``): every field but the exact time is the file's.
                self._unindexed[path] = (dataclasses.replace(record, updated=conv.updated), os.stat(path))

    def update_index(self) -> None:
        """Bring the search index in line with what was written since (best effort: see the module)."""
        with self._lock:
            pending, self._unindexed = self._unindexed, {}
        if self.index is None:
            return
        for path, written in pending.items():
            try:
                if written is None:
                    self.index.remove_journal(path)
                else:
                    self.index.put_journal(path, *written)
            except Exception:  # noqa: BLE001 - the index is never the source of truth: sync repairs it
                continue

    def _lock_path(self, key: str) -> Path:
        return self.directory / f"{key}.lock"

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

        If another running dsvl-chat has the entry open, this returns a copy
        under a new id (``conv.id != entry.id``) with its own entry and image
        copies, so neither program overwrites the other; say so to the user.
        """
        path = entry_or_id.path if isinstance(entry_or_id, JournalEntry) else self.path_for(str(entry_or_id))
        conv, _, value = read(path, trusted=True)  # our own file: hashed images may come from their source
        conv.id = path.stem
        saved = value.get("saved_path") if isinstance(value, dict) else None
        conv.path = Path(saved) if isinstance(saved, str) and saved and "\0" not in saved else None
        if not _lock(self._lock_path(conv.id)):
            self._copy(conv, path.with_suffix(".images"))
        return conv

    def _copy(self, conv: Conversation, folder: Path) -> None:
        """Make ``conv`` a new conversation whose images live in its own folder (linked or copied from
        ``folder``, which the other program may delete), and journal it."""
        conv.id = uuid.uuid4().hex
        own = self.directory / f"{conv.id}.images"
        for message in all_messages(conv):  # the branches' pictures too
            for att in message.images:
                if att.path is None or att.missing or Path(att.path).parent != folder:
                    continue
                target = own / Path(att.path).name
                try:
                    own.mkdir(mode=0o700, exist_ok=True)
                    if not target.exists():
                        try:
                            os.link(att.path, target)  # never rewritten in place: sharing the file is safe
                        except OSError:
                            atomic_write_bytes(target, att.checked_bytes())  # only bytes with its hash
                    att.path = str(target)
                except OSError:
                    continue  # kept where it is; the next record copies it if it can
        self.record(conv)

    def forget(self, conv_id: JournalEntry | str) -> None:
        """Remove a conversation's entry and its image copies (nothing else is touched)."""
        path = conv_id.path if isinstance(conv_id, JournalEntry) else self.path_for(str(conv_id))
        with self._lock:
            self._remove(path)
        self.update_index()

    def _remove(self, path: Path) -> None:
        self._stored.pop(path.stem, None)
        try:
            path.unlink()
        except FileNotFoundError:
            self._unindexed.pop(path, None)  # never written (an empty tab): nothing to take out of the index
        else:
            if self.index is not None:
                self._unindexed[path] = None
        folder = path.with_suffix(".images")
        if folder.is_dir() and not self._referenced(folder):
            shutil.rmtree(folder, ignore_errors=True)

    def _referenced(self, folder: Path) -> bool:
        """Whether another entry names an image in ``folder`` (as its ``source``): then it stays."""
        needle = json.dumps(str(folder.absolute()) + os.sep, ensure_ascii=False)[1:-1].encode("utf-8")
        try:
            names = list(self.directory.glob("*.json"))
        except OSError:
            return True
        for other in names:
            try:
                if needle in other.read_bytes():
                    return True
            except OSError:
                continue
        return False


def sweep_temp_files(root: Path | None = None, older_than: float = SWEEP_TEMP_SECONDS) -> int:
    """Remove the temporary files a killed writer left in the data folder; returns how many.

    Only names ``atomic.temp_name`` makes, only older than ``older_than``
    seconds (a running writer's are younger), only in the data folder, its
    subfolders and their ``*.images`` folders. Symbolic links are not followed.
    """
    root = data_dir() if root is None else Path(root)
    folders = [root]
    removed = 0
    cutoff = time.time() - older_than
    for depth in range(3):
        subfolders = []
        for folder in folders:
            try:
                children = list(os.scandir(folder))
            except OSError:
                continue
            for child in children:
                try:
                    if child.is_dir(follow_symlinks=False):
                        if depth < 1 or child.name.endswith(".images"):
                            subfolders.append(Path(child.path))
                    elif child.is_file(follow_symlinks=False) and is_temp_file(Path(child.path)) \
                            and child.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(child.path)
                        removed += 1
                except OSError:
                    continue
        folders = subfolders
    return removed


_held: dict[str, int] = {}  # lock file -> open descriptor: the locks this process holds (process-wide, as locks are)
_held_guard = threading.Lock()


def _lock(path: Path) -> bool:
    """Take the OS lock on ``path`` for the rest of this process; False if another process holds it.

    Where the file system cannot lock (some network file systems), this answers
    True: journaling goes on unlocked rather than stopping.
    """
    key = os.path.abspath(path)
    with _held_guard:
        if key in _held:
            return True
        try:
            fd = os.open(key, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
        except OSError:
            return True  # the entry's own write reports a folder that cannot be written
        try:
            if sys.platform == "win32":
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if sys.platform == "win32" or error.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                return False
            return True
        _held[key] = fd
        return True


def _file_id(conv_id: str) -> str:
    """A conversation id usable as a file name (ids are uuid hex; anything else is hashed)."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", conv_id):
        return conv_id
    return hashlib.sha256(conv_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _first_image(messages: list) -> str:
    """The name of the first image in a transcript's ``messages`` (as read, unchecked); "" if none."""
    for message in messages:
        images = message.get("images") if isinstance(message, dict) else None
        for image in images if isinstance(images, list) else []:
            if isinstance(image, dict) and isinstance(image.get("name"), str) and image["name"]:
                return str(image["name"])
    return ""


def _entry(path: Path) -> JournalEntry | None:
    """A summary of one journal file without checking its images; None if it is not a transcript."""
    try:
        doc = json.loads(read_regular(path, MAX_FILE_BYTES))  # a FIFO named *.json must not hang /resume
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("messages"), list):
            return None
        messages = doc["messages"]
        updated = parse_time(doc["updated"]) if isinstance(doc.get("updated"), str) else os.stat(path).st_mtime
        title = doc["title"] if isinstance(doc.get("title"), str) else ""
        model = doc["model"] if isinstance(doc.get("model"), str) else ""
        return JournalEntry(path, title, updated, len(messages), model, _first_image(messages))
    except (OSError, ValueError, OverflowError, RecursionError):
        return None
