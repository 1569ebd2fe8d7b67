"""Open only regular files: every path the app reads comes through here.

A path can name a FIFO (opening it waits for a writer, forever), a device
(``/dev/zero`` never ends, ``/dev/tty`` waits for a key), a socket or a
folder. ``open_regular`` opens without blocking (``O_NONBLOCK``), asks the
*opened* file what it is (``fstat``) and refuses anything but a regular
file, so what is checked is what is read: there is no window between a
check and an open in which the path could be swapped. A quick ``stat``
first refuses devices before they are even opened (opening some has side
effects). ``read_regular`` reads a whole file up to a size limit.

The errors are ``OSError`` subclasses, so code that already handles an
unreadable file handles these too; ``str()`` is one line naming the file.
Importing this module imports nothing heavy (no torch, no PIL).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from typing import BinaryIO

_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISLNK, "a symbolic link"),
)


def shown_path(path: str | os.PathLike[str]) -> str:
    """A path or file name for a one-line message: control characters escaped."""
    text = os.fsdecode(os.fspath(path))
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def kind_of(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words ("a named pipe (FIFO)")."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "not a regular file"


class UnusableFileError(OSError):
    """A path that cannot be read as a file of its kind; ``str()`` is one line naming it."""

    def __init__(self, path: str | os.PathLike[str], reason: str, code: int = errno.EINVAL) -> None:
        super().__init__(code, reason, os.fsdecode(os.fspath(path)))
        self.path = os.fsdecode(os.fspath(path))
        self.reason = reason

    def __str__(self) -> str:
        return f"{shown_path(self.path)}: {self.reason}"


class NotRegularFileError(UnusableFileError):
    """The path names a FIFO, a device, a socket or a folder, not a regular file."""

    def __init__(self, path: str | os.PathLike[str], mode: int) -> None:
        self.kind = kind_of(mode)
        super().__init__(path, f"is {self.kind}, not a regular file",
                         errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL)


class FileTooLargeError(UnusableFileError):
    """The file is larger than the reader allows."""

    def __init__(self, path: str | os.PathLike[str], limit: int) -> None:
        self.limit = limit
        super().__init__(path, f"is larger than {_size(limit)}, the most read from such a file", errno.EFBIG)


def _size(count: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return f"{count >> shift} {unit}"
    return f"{count:,} bytes"


def _refuse(path: str | os.PathLike[str], mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(path, mode)


def open_regular(path: str | os.PathLike[str], *, follow_symlinks: bool = True,
                 dir_fd: int | None = None) -> BinaryIO:
    """Open ``path`` for reading in binary mode, refusing anything but a regular file.

    Never blocks on a FIFO or a device. With ``follow_symlinks=False`` a
    symbolic link itself is refused (``O_NOFOLLOW``). ``dir_fd``: ``path`` is
    relative to that open folder (as ``os.open`` takes it). Raises ``OSError``
    (``FileNotFoundError``, ``PermissionError``, ``NotRegularFileError``...).
    """
    # A stat first, so a device is refused without being opened at all.
    _refuse(path, os.stat(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks).st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOCTTY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags) if dir_fd is None else os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if not follow_symlinks and exc.errno == errno.ELOOP:
            raise UnusableFileError(path, "is a symbolic link, which is not followed here", errno.ELOOP) from None
        raise
    try:
        # The opened file decides: the path may have been swapped since the stat.
        _refuse(path, os.fstat(fd).st_mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # ordinary reads from here on
        return open(fd, "rb")  # the caller closes it
    except BaseException:
        os.close(fd)
        raise


def open_beneath(root: str | os.PathLike[str], parts: Sequence[str]) -> BinaryIO:
    """Open the regular file ``root/parts[0]/.../parts[-1]``, following no symbolic link below ``root``.

    The caller resolves the path first (``os.path.realpath``) and checks where
    it leads; this then opens each folder relative to the one before it
    (``dir_fd``) with ``O_NOFOLLOW``, so a link swapped in after that check is
    refused (``UnusableFileError``), never followed out of ``root``. Where the
    platform has no ``dir_fd`` the joined path is opened with ``O_NOFOLLOW`` on
    its last part only.
    """
    if not parts:
        raise NotRegularFileError(root, stat.S_IFDIR)
    joined = os.path.join(root, *parts)
    if os.open not in os.supports_dir_fd or not hasattr(os, "O_DIRECTORY") or not hasattr(os, "O_NOFOLLOW"):
        return open_regular(joined, follow_symlinks=False)
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a link (or a file) where a folder was
                    raise UnusableFileError(joined, f"{shown_path(part)} on its way is not a folder "
                                                    "(a symbolic link is not followed here)", errno.ELOOP) from None
                raise
            os.close(folder)
            folder = inner
        try:
            return open_regular(parts[-1], follow_symlinks=False, dir_fd=folder)
        except UnusableFileError as exc:
            raise UnusableFileError(joined, exc.reason, exc.errno or errno.EINVAL) from None
    finally:
        os.close(folder)


def read_regular(path: str | os.PathLike[str], limit: int, *, follow_symlinks: bool = True) -> bytes:
    """The whole of a regular file of at most ``limit`` bytes (else ``FileTooLargeError``)."""
    with open_regular(path, follow_symlinks=follow_symlinks) as handle:
        if os.fstat(handle.fileno()).st_size > limit:
            raise FileTooLargeError(path, limit)
        data = handle.read(limit + 1)  # the file may have grown since
    if len(data) > limit:
        raise FileTooLargeError(path, limit)
    return data


def fd_path(handle: BinaryIO, path: str | os.PathLike[str]) -> str:
    """A path that opens the very file ``handle`` has open, for libraries that take only a path.

    On Linux ``/proc/self/fd/N`` reopens the open file itself, whatever has
    happened to ``path`` since; elsewhere ``path`` (already checked) is returned.
    """
    proc = f"/proc/self/fd/{handle.fileno()}"
    return proc if os.path.exists(proc) else os.fsdecode(os.fspath(path))


__all__ = [
    "FileTooLargeError", "NotRegularFileError", "UnusableFileError", "fd_path", "kind_of", "open_beneath",
    "open_regular", "read_regular", "shown_path",
]
