"""Find a word in any conversation: a full-text index of the journal and of saved transcripts.

SQLite FTS5 from Python's standard library, one file in the data folder
(``search.sqlite3``). It is never the source of truth: the journal's files and
the saved transcripts are, and the index is brought back in line with them
(``sync``) before each search. What it holds:

- every journal entry (autosave), updated by the autosave worker after each
  journal write (``Journal.update_index``), never on the TUI's event loop;
- every transcript this program saved (``/save``) or loaded (``/load``); the
  app cannot know of transcripts it never touched, so it does not scan the disk.

One row per message (and one per compared answer, ``/compare``, under its message's number: a match there is a
match of that message, its snippet labelled with the compared model): its text and its pictures' names, folded by the
``unicode61`` tokenizer (case, and diacritics: "creme" finds "Crème"). A
search is words (each matched whole, or as a prefix when it ends in ``*``),
all of them in one message; FTS5's own syntax is never passed through, so
``"`` or ``AND (`` are words like any other. Results are ranked by bm25, one
per conversation (its best message).

Rebuilt when missing, unreadable (a corrupt file is deleted and made again)
or stale: ``PRAGMA user_version`` holds the schema version, and each
conversation row holds its file's stamp (inode, size, mtime), so a file
changed behind the index's back (another program, a lost update) is read
again at the next ``sync``. Writes go through SQLite's write-ahead log
(``journal_mode=WAL``, ``synchronous=NORMAL``): a ``kill -9`` at any moment
leaves the last committed state; a power cut may lose the last commits,
which ``sync`` redoes from the files.

What a row holds, the query and the snippet are ``search_text``'s.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsvl_tui.core.text import printable, valid_text
from dsvl_tui.storage.paths import data_dir
from dsvl_tui.storage.search_text import (
    MATCH_END,
    MATCH_START,
    Hit,
    QueryError,
    Record,
    match_query,
    read_record,
    snippet_pieces,
)

__all__ = ["INDEX_FILE", "SCHEMA_VERSION", "Hit", "QueryError", "Record", "SearchIndex", "match_query"]

INDEX_FILE = "search.sqlite3"
SCHEMA_VERSION = 3  # 3: compared answers have rows of their own (an index of 2 lacks them: it is made again)
TOKENIZER = "unicode61 remove_diacritics 2"
BUSY_SECONDS = 2.0  # another writer (a second dsvl-chat) holds the index at most about this long
BATCH = 200  # conversations indexed per transaction while syncing: other writers get their turn between
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 6, 11, 26  # SQLite's result codes
SNIPPET_TOKENS = 16
# A search matching more messages than this is listed newest first instead of by bm25: ranking costs about a
# microsecond a match, and a word in that many messages is one bm25 gives almost no weight anyway.
RANKED_MATCHES = 10_000
# A folder's modification time this recent may not yet show a write in the same clock tick (coarse file systems):
# the scan it saves is then not skipped next time.
SETTLED_NS = 2_000_000_000

_SCHEMA = (
    "CREATE TABLE convs(id INTEGER PRIMARY KEY, key BLOB UNIQUE NOT NULL, kind TEXT NOT NULL, path BLOB NOT NULL,"
    " saved BLOB, title TEXT NOT NULL, updated REAL NOT NULL, pictures INTEGER NOT NULL,"
    " messages INTEGER NOT NULL, stamp TEXT NOT NULL)",
    # side: 0 the message itself, 1 its compared answer (label: the compared model's, for the snippet).
    "CREATE TABLE msgs(rid INTEGER PRIMARY KEY, conv INTEGER NOT NULL, msg INTEGER NOT NULL, side INTEGER NOT NULL,"
    " label TEXT NOT NULL, digest BLOB NOT NULL, UNIQUE(conv, msg, side))",
    # prefix: "ph*" and "pho*" read one list instead of merging every word that starts so.
    f"CREATE VIRTUAL TABLE fts USING fts5(text, names, tokenize='{TOKENIZER}', prefix='2 3')",
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def _stamp(info: os.stat_result) -> str:
    return f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


def _digest(text: str, names: str) -> bytes:
    return hashlib.blake2b(f"{text}\0{names}".encode("utf-8", "replace"), digest_size=8).digest()


def _fs(path: Path | str) -> bytes:
    """A path as bytes (a file name need not be UTF-8)."""
    return os.fsencode(str(path))


class SearchIndex:
    """The index file and the journal folder it mirrors. Safe to share between threads (one lock)."""

    def __init__(self, path: Path | None = None, journal_dir: Path | None = None) -> None:
        self.path = Path(path) if path is not None else data_dir() / INDEX_FILE
        self.journal_dir = Path(journal_dir) if journal_dir is not None else data_dir() / "journal"
        self._con: sqlite3.Connection | None = None
        self._inode: int | None = None
        self._lock = threading.RLock()

    # -- the connection ---------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        """The open index, made (or made again) when missing, of another schema version, or not a database."""
        try:
            inode = os.stat(self.path).st_ino
        except OSError:
            inode = None
        if self._con is not None and inode == self._inode:
            return self._con
        self.close()  # deleted or replaced since (another program rebuilt it): open the one there now
        try:
            return self._open()
        except sqlite3.DatabaseError as error:
            # A file that cannot even be opened as an index (a garbled header reads as a disk I/O error) is made
            # again; only another program holding it is waited for, and reported.
            code = getattr(error, "sqlite_errorcode", 0) & 0xFF
            if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
                raise
            self.delete()
            return self._open()

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # conversations are private: the file (and its -wal, -shm) is the user's alone
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        con = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                tables = con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:  # another schema: start afresh (sync refills it from the files)
                    raise sqlite3.DatabaseError(f"search index schema {version}, not {SCHEMA_VERSION}")
                con.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    con.execute(statement)
                con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                con.execute("COMMIT")
            for table in ("convs", "msgs", "fts", "meta"):  # all there (a file made by another version may lack one)
                con.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall()
        except BaseException:
            con.close()
            raise
        self._con, self._inode = con, os.stat(self.path).st_ino
        return con

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def delete(self) -> None:
        """Remove the index file (and SQLite's files beside it): the next use builds it again."""
        self.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(f"{self.path}{suffix}")
            except FileNotFoundError:
                pass

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _guarded(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` under the lock; a corrupt index is deleted and ``work`` tried once more on a new one."""
        with self._lock:
            try:
                return work()
            except sqlite3.DatabaseError as error:
                if not _damaged(error):  # busy, a full disk, read-only: the file is fine, the moment is not
                    raise
                self.delete()
                return work()

    # -- writing ---------------------------------------------------------------------------
    def put_journal(self, entry: Path, record: Record, stamp: os.stat_result | None = None) -> None:
        """Index journal entry ``entry`` (a ``<id>.json``) as ``record``; ``stamp``: its file's ``stat``."""
        self._guarded(lambda: self._put_many([(b"j:" + _fs(entry.stem), "journal", entry, record, stamp)]))

    def put_saved(self, path: Path, record: Record) -> None:
        """Index a transcript this program saved or loaded."""
        path = Path(path).absolute()
        try:
            stamp: os.stat_result | None = os.stat(path)
        except OSError:
            stamp = None
        self._guarded(lambda: self._put_many([(b"s:" + _fs(path), "saved", path, record, stamp)]))

    def remove_journal(self, entry: Path) -> None:
        self._guarded(lambda: self._remove([b"j:" + _fs(entry.stem)]))

    def _put_many(self, rows: Iterable[tuple[bytes, str, Path, Record, os.stat_result | None]]) -> None:
        with self._writing() as con:
            for key, kind, path, record, stamp in rows:
                _put(con, key, kind, path, record, "" if stamp is None else _stamp(stamp))

    def _remove(self, keys: Iterable[bytes]) -> None:
        with self._writing() as con:
            for key in keys:
                row = con.execute("SELECT id FROM convs WHERE key=?", (key,)).fetchone()
                if row is None:
                    continue
                rids = [r for (r,) in con.execute("SELECT rid FROM msgs WHERE conv=?", (row[0],))]
                con.executemany("DELETE FROM fts WHERE rowid=?", [(r,) for r in rids])
                con.execute("DELETE FROM msgs WHERE conv=?", (row[0],))
                con.execute("DELETE FROM convs WHERE id=?", (row[0],))

    # -- staying in line with the files ----------------------------------------------------------
    def sync(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Index what changed on disk since: new, changed and deleted journal entries and saved transcripts.

        Returns how many conversations were read again; ``progress(done, total)`` follows a long rebuild.
        """
        return int(self._guarded(lambda: self._sync(progress)))

    def _sync(self, progress: Callable[[int, int], None] | None) -> int:
        con = self._connection()
        # Every journal write renames a file into the folder, which changes the folder's modification time: when
        # that is as the last full scan found it, only the saved transcripts (a few) need a look.
        try:
            folder = os.stat(self.journal_dir)
            seen = f"{folder.st_ino}:{folder.st_mtime_ns}"
        except OSError:
            folder, seen = None, ""
        row = con.execute("SELECT value FROM meta WHERE key='journal'").fetchone()
        scan = folder is not None and (row is None or row[0] != seen)
        query = "SELECT key, stamp FROM convs"
        if not scan and folder is not None:
            query += " WHERE kind='saved'"
        known = {bytes(key): stamp for key, stamp in con.execute(query)}
        changed: list[tuple[bytes, str, Path, os.stat_result]] = []
        try:
            entries = list(os.scandir(self.journal_dir)) if scan else []
        except OSError:
            entries = []
        for entry in entries:
            if not entry.name.endswith(".json"):  # a temporary file (.NAME.RANDOM.tmp) never does
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            key = b"j:" + _fs(entry.name[:-5])
            if known.pop(key, None) != _stamp(info):
                changed.append((key, "journal", Path(entry.path), info))
        for key in [k for k in known if k.startswith(b"s:")]:
            stamp = known.pop(key)
            path = Path(os.fsdecode(key[2:]))
            try:
                info = os.stat(path)
            except OSError:
                continue  # gone (or unreachable): removed below
            if _stamp(info) != stamp:
                changed.append((key, "saved", path, info))
        self._remove(known)
        for start in range(0, len(changed), BATCH):
            batch = changed[start:start + BATCH]
            records = [(key, kind, path, read_record(path, kind), info) for key, kind, path, info in batch]
            self._remove([key for key, _, _, record, _ in records if record is None])  # no longer a transcript
            self._put_many([(key, kind, path, record, info) for key, kind, path, record, info in records
                            if record is not None])
            if progress is not None:
                progress(start + len(batch), len(changed))
        if scan and folder is not None and time.time_ns() - folder.st_mtime_ns > SETTLED_NS:
            with self._writing() as con:
                con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('journal', ?)", (seen,))
        return len(changed)

    # -- searching -----------------------------------------------------------------------------
    def search(self, text: str, limit: int = 50, *, sync: bool = True) -> list[Hit]:
        """The conversations with a message holding every word of ``text``, best first (bm25), at most ``limit``.

        Raises ``QueryError`` for a search with no word in it, ``OSError``/``sqlite3.Error`` if the index
        cannot be read or made.
        """
        query = match_query(text)
        if sync:
            self.sync()
        return list(self._guarded(lambda: self._search(query, limit)))

    def _search(self, query: str, limit: int) -> list[Hit]:
        con = self._connection()
        matches = con.execute("SELECT count(*) FROM fts WHERE fts MATCH ?", (query,)).fetchone()[0]
        if not matches:
            return []
        # The best messages by rank alone (FTS5 sorts them itself), then one per conversation; snippets only for
        # those: made for every match, they would cost more than the search.
        order = "rank" if matches <= RANKED_MATCHES else "rowid DESC"
        # Enough messages for ``limit`` conversations even when each has several matches; rowid order costs nothing.
        wanted = max(1, limit) * (8 if order == "rank" else 32)
        ranked = con.execute(f"SELECT rowid, {'rank' if order == 'rank' else 'NULL'} FROM fts WHERE fts MATCH ?"
                             f" ORDER BY {order} LIMIT ?", (query, wanted)).fetchall()
        best, score_of = [rid for rid, _ in ranked], dict(ranked)
        marks = ",".join("?" * len(best))
        conv_of = dict(con.execute(f"SELECT rid, conv FROM msgs WHERE rid IN ({marks})", best).fetchall())
        chosen: dict[int, int] = {}  # conversation -> its best message
        for rid in best:
            if rid in conv_of and conv_of[rid] not in chosen:
                chosen[conv_of[rid]] = rid
        marks = ",".join("?" * len(chosen))
        about = {row[0]: row[1:] for row in con.execute(
            f"SELECT id, kind, path, saved, title, updated, pictures, messages FROM convs WHERE id IN ({marks})",
            list(chosen))}
        number_of = {rid: (msg, label) for rid, msg, label in con.execute(
            f"SELECT rid, msg, label FROM msgs WHERE rid IN ({marks})", list(chosen.values()))}
        hits: list[Hit] = []
        saved_of_journal: set[str] = set()
        for conv, rid in chosen.items():
            if sum(h.kind == "journal" for h in hits) >= limit:  # a saved one may yet prove a journal entry's
                break
            if conv not in about or rid not in number_of:
                continue
            kind, path, saved, title, updated, pictures, messages = about[conv]
            # No bm25() here: each statement would count the whole doclist again for its weights.
            snippet = con.execute("SELECT snippet(fts, -1, ?, ?, '\u2026', ?) FROM fts WHERE fts MATCH ? AND rowid = ?",
                                  (MATCH_START, MATCH_END, SNIPPET_TOKENS, query, rid)).fetchone()
            if snippet is None:
                continue
            number, label = number_of[rid]
            hit = Hit(kind, Path(os.fsdecode(path)), printable(" ".join(title.split())), updated, pictures, messages,
                      number, snippet_pieces(snippet[0], label), score_of[rid], label)
            if kind == "journal" and saved:
                saved_of_journal.add(os.fsdecode(saved))
            hits.append(hit)
        # A transcript that is also a journal entry's /save file is the same conversation: the entry stands for both.
        found = [h for h in hits if not (h.kind == "saved" and str(h.path) in saved_of_journal)]
        return found[:limit]


def _damaged(error: sqlite3.DatabaseError) -> bool:
    """Whether ``error`` says the file is not a usable index (corrupt, not a database, tables missing): then it
    is made again; any other error (locked, busy, disk full) is not the file's fault and is left alone."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return not isinstance(error, sqlite3.OperationalError)  # ours: another schema version
    return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "no such table" in str(error) \
        or "no such column" in str(error)


def _put(con: sqlite3.Connection, key: bytes, kind: str, path: Path, record: Record, stamp: str) -> None:
    """Write one conversation's rows: only the messages (and compared answers) whose text, pictures or compared
    model changed are indexed again."""
    try:
        saved: bytes | None = _fs(record.saved) if record.saved else None
    except UnicodeEncodeError:
        saved = None
    values = (kind, _fs(path), saved, printable(valid_text(record.title)), record.updated, record.pictures,
              len(record.messages), stamp)
    row = con.execute("SELECT id FROM convs WHERE key=?", (key,)).fetchone()
    if row is None:
        conv = con.execute("INSERT INTO convs(kind, path, saved, title, updated, pictures, messages, stamp, key)"
                           " VALUES(?,?,?,?,?,?,?,?,?)", (*values, key)).lastrowid
    else:
        conv = row[0]
        con.execute("UPDATE convs SET kind=?, path=?, saved=?, title=?, updated=?, pictures=?, messages=?, stamp=?"
                    " WHERE id=?", (*values, conv))
    old = {(msg, side): (rid, bytes(digest)) for rid, msg, side, digest in
           con.execute("SELECT rid, msg, side, digest FROM msgs WHERE conv=?", (conv,))}
    rows = [(number, 0, text, names, "") for number, (text, names) in enumerate(record.messages)]
    rows += [(number, 1, text, "", printable(valid_text(label))) for number, label, text in record.compared
             if 0 <= number < len(record.messages)]
    for number, side, text, names, label in rows:
        digest = _digest(text, f"{names}\0{label}" if side else names)
        had = old.pop((number, side), None)
        if had is not None and had[1] == digest:
            continue
        if had is not None:
            rid = had[0]
            con.execute("DELETE FROM fts WHERE rowid=?", (rid,))
            con.execute("UPDATE msgs SET digest=?, label=? WHERE rid=?", (digest, label, rid))
        else:
            rid = con.execute("INSERT INTO msgs(conv, msg, side, label, digest) VALUES(?,?,?,?,?)",
                              (conv, number, side, label, digest)).lastrowid
        # Stored printable: what a snippet shows needs no control characters (and so the markers stay unique).
        con.execute("INSERT INTO fts(rowid, text, names) VALUES(?,?,?)",
                    (rid, printable(valid_text(text)), printable(valid_text(names))))
    for rid, _ in old.values():
        con.execute("DELETE FROM fts WHERE rowid=?", (rid,))
        con.execute("DELETE FROM msgs WHERE rid=?", (rid,))
