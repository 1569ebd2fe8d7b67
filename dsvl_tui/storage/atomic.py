"""Replace a file in one step, so a crash or a full disk never leaves half of it.

The bytes go to a temporary file in the same folder (the same file system, so
the final rename is atomic), are flushed and fsynced, and the temporary file is
renamed over the target. A reader sees the old file or the new one, never a
mix; a failure at any step removes the temporary file and leaves the old file
as it was.

Each write records the identity of the file it made (``FileStamp``: inode,
size, modification time), so a caller about to replace a file can check it is
still the one this program last wrote or read (``last_written``, ``stamp``).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import threading
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

_TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")  # what temp_name makes, and nothing else
_REMEMBERED = 256  # recent writes whose stamps are kept


class FileStamp(NamedTuple):
    """Which file is at a path: a replaced or rewritten file changes at least one field."""

    inode: int
    size: int
    mtime_ns: int


def stamp(path: Path | str) -> FileStamp | None:
    """The stamp of the file at ``path`` now; None if there is none."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return FileStamp(info.st_ino, info.st_size, info.st_mtime_ns)


def last_written(path: Path | str) -> FileStamp | None:
    """The stamp of the file this process last wrote at ``path`` with ``atomic_write_bytes``, if recent."""
    with _written_lock:
        return _written.get(os.path.abspath(path))


_written: OrderedDict[str, FileStamp] = OrderedDict()  # process-wide: what this program wrote where
_written_lock = threading.Lock()


def _remember(path: Path, made: FileStamp) -> None:
    with _written_lock:
        key = os.path.abspath(path)
        _written.pop(key, None)
        _written[key] = made
        while len(_written) > _REMEMBERED:
            _written.popitem(last=False)


def temp_name(path: Path) -> Path:
    """A fresh hidden name beside ``path`` for its temporary file (``.NAME.RANDOM.tmp``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")


def is_temp_file(path: Path) -> bool:
    """Whether ``path`` is named like the temporary files ``temp_name`` makes (left behind by a killed writer)."""
    return _TEMP_NAME.fullmatch(path.name) is not None


def atomic_write_bytes(path: Path, data: bytes) -> FileStamp:
    """Write ``data`` to ``path`` atomically; raise ``OSError`` with the old file untouched.

    A new file gets the usual permissions (0o666 less the umask); a replaced
    file keeps its mode. Returns the stamp of the file written (also kept for
    ``last_written``).
    """
    path = Path(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = None
    while True:
        temp = temp_name(path)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        info = os.stat(temp)  # the rename keeps inode, size and mtime
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    made = FileStamp(info.st_ino, info.st_size, info.st_mtime_ns)
    _remember(path, made)
    _fsync_folder(path.parent)
    return made


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable. Best effort: the new file is already in place,
    and some systems (Windows, some network file systems) cannot fsync a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
