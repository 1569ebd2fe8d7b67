"""A process group: how ``dsvl-chat web`` starts its children in one, and stops all of them.

The launcher puts the model server and every browser tab's app (started by ``web.server``) in one
process group, so a stop reaches grandchildren too. Both import these helpers from here, so neither
imports the other.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GRACE_SECONDS = 5.0  # after SIGTERM, before SIGKILL


def group_kwargs(group: int | None) -> dict[str, Any]:
    """Keyword arguments of ``subprocess.Popen`` that put the child in process group ``group`` (0: a new one)."""
    if group is None:
        return {}
    if sys.version_info >= (3, 11):
        return {"process_group": group}
    return {"preexec_fn": lambda: os.setpgid(0, group)}  # pragma: no cover - Python 3.10


def group_alive(group: int) -> bool:
    """True while a process of ``group`` is left (zombies not counted: they are gone but for a parent's wait)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def stop_group(group: int, main: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM to every process of ``group``, SIGKILL to what is left after ``GRACE_SECONDS``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline:
            if main is not None:
                main.poll()
            if not group_alive(group):
                break
            time.sleep(0.05)
        else:
            continue
        break
    if main is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            main.wait(1)


__all__ = ["GRACE_SECONDS", "group_alive", "group_kwargs", "stop_group"]
