"""The secret of ``dsvl-chat web``: there always is one, and it never needs a command line.

A web server on 127.0.0.1 is reachable by every account of the machine, not
only by its owner, and each websocket starts an app that acts as the owner
(it writes files, runs ``/export`` anywhere). So the server always requires a
secret: the one given (``DSVL_WEB_TOKEN``, ``--token-file PATH``, or
``--token``, which every user can read in ``/proc/PID/cmdline`` and is
warned about), else one generated here (256 bits) and printed in the URL to
open, as Jupyter does.

A token file is refused unless it is a regular file of this user that no other
user may read or write (mode 0600 or stricter): another user who can read it
has the token, one who can write it chooses it.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from engine.files import kind_of, shown_path

MIN_LENGTH = 8  # characters of a given token (16 off loopback: cli._require_secret)
GENERATED_BYTES = 32  # a generated token: 256 bits, 43 URL-safe characters
MAX_FILE_BYTES = 4096  # a token file holds one short line

#: The warning ``--token VALUE`` on the command line gets (one line).
COMMAND_LINE_WARNING = ("warning: --token on the command line can be read by every user of this machine "
                        "(ps, /proc/PID/cmdline); give it in DSVL_WEB_TOKEN or --token-file PATH instead")


class SecretError(ValueError):
    """A token that cannot be used; ``str()`` is one line naming where it came from."""


def generate() -> str:
    """A fresh token of ``GENERATED_BYTES`` random bytes, URL-safe."""
    return secrets.token_urlsafe(GENERATED_BYTES)


def check_token(token: str, source: str) -> str:
    """``token`` if it can be used (``MIN_LENGTH`` printable characters or more, no spaces), else ``SecretError``."""
    if not token:
        raise SecretError(f"{source} is empty: give a token of {MIN_LENGTH} characters or more")
    if any(not ch.isprintable() or ch.isspace() for ch in token):
        raise SecretError(f"{source} holds spaces or control characters: give one word of {MIN_LENGTH} "
                          "characters or more")
    if len(token) < MIN_LENGTH:
        raise SecretError(f"{source} is too short: use {MIN_LENGTH} characters or more")
    return token


def read_token_file(path: Path) -> str:
    """The token in ``path`` (surrounding white space stripped); ``SecretError`` (one line) if it cannot be used."""
    shown = shown_path(path)
    try:
        # O_NONBLOCK: a FIFO does not hang the start; fstat of the opened file is what is checked and read
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        reason = "no such file" if exc.errno == errno.ENOENT else exc.strerror or str(exc)
        raise SecretError(f"cannot read --token-file {shown}: {reason}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(f"--token-file {shown} is {kind_of(info.st_mode)}, not a file")
        if info.st_uid != os.geteuid():
            raise SecretError(f"--token-file {shown} belongs to another user, who knows the token: "
                              "use a file of your own (chmod 600)")
        if info.st_mode & 0o077:
            raise SecretError(f"--token-file {shown} can be read or written by other users "
                              f"(mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 {shown}")
        data = os.read(fd, MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SecretError(f"cannot read --token-file {shown}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise SecretError(f"--token-file {shown} is over {MAX_FILE_BYTES} bytes: it should hold the token only")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"--token-file {shown} is not UTF-8 text") from None
    return check_token(text.strip(), f"the token in --token-file {shown}")


__all__ = ["COMMAND_LINE_WARNING", "GENERATED_BYTES", "MIN_LENGTH", "SecretError", "check_token", "generate",
           "read_token_file"]
