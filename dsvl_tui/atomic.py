"""Replace a file in one step, so a crash or a full disk never leaves half of it.

The bytes go to a temporary file in the same folder (the same file system, so
the final rename is atomic), are flushed and fsynced, and the temporary file is
renamed over the target. A reader sees the old file or the new one, never a
mix; a failure at any step removes the temporary file and leaves the old file
as it was.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

_TEMP_SUFFIX = ".tmp"


def temp_name(path: Path) -> Path:
    """A fresh hidden name beside ``path`` for its temporary file (``.NAME.RANDOM.tmp``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")


def is_temp_file(path: Path) -> bool:
    """Whether ``path`` looks like a temporary file a killed writer left behind."""
    return path.name.startswith(".") and path.name.endswith(_TEMP_SUFFIX)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; raise ``OSError`` with the old file untouched.

    A new file gets the usual permissions (0o666 less the umask); a replaced
    file keeps its mode.
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
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    _fsync_folder(path.parent)


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
