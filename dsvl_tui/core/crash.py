"""Unexpected errors: the traceback to a log file in the data folder, one line for the user.

Used by ``cli.main`` for an exception that reaches it and by the full-screen
app's input thread (``driver``), so that a bug ends the program with exit code 1
and a line that says where the details are, never a success code or a page of
traceback over the user's terminal.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from dsvl_tui import __version__
from dsvl_tui.core.text import error_line, printable
from dsvl_tui.storage.paths import data_dir

CRASH_LOG = "crash.log"
MAX_LOG_BYTES = 1_000_000  # a log this big is started over rather than grown


def crash_log() -> Path:
    return data_dir() / CRASH_LOG


def record(exc: BaseException) -> tuple[str, str | None]:
    """Append ``exc``'s traceback to the crash log.

    Returns the one-line message for the user (``error: unexpected ...``) and,
    if the log could not be written, the traceback to show instead.
    """
    details = "".join(traceback.format_exception(exc))
    what = error_line(printable(f"{type(exc).__name__}: {exc}"))
    path = None
    try:
        path = crash_log()
        path.parent.mkdir(parents=True, exist_ok=True)
        keep = path.exists() and path.stat().st_size < MAX_LOG_BYTES
        with path.open("a" if keep else "w", encoding="utf-8", errors="backslashreplace") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} dsvl-chat {__version__}: "
                      f"{printable(' '.join(sys.argv))!r}\n{details}\n")
    except OSError as log_error:
        where = f" {path}" if path is not None else ""
        return f"error: unexpected {what} (could not write the crash log{where}: {printable(str(log_error))})", details
    return f"error: unexpected {what} (traceback in {printable(str(path))}; please report it)", None
