"""How long a test waits for a subprocess that runs the app.

A subprocess imports textual and often torch, transformers and timm before
it does anything: 17–58 s on a busy 2-core machine (CI may share its cores).
Its timeout ends a hang; it does not judge speed (benchmarks do), so it is
generous. pytest-timeout (pyproject.toml) bounds each test above it.
``kill_9_when`` kills such a child the moment what a test waits for is there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

PROCESS_TIMEOUT = 600

T = TypeVar("T")


def kill_9_when(child: subprocess.Popen, condition: Callable[[], T], what: str) -> T:
    """Poll ``condition`` while ``child`` runs; once it gives something true, kill -9 the child and return it.
    Fails if the child ends first (with its stderr) or after ``PROCESS_TIMEOUT`` (saying ``what`` never came)."""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while not (value := condition()):
        assert child.poll() is None, child.stderr.read() if child.stderr else "the child ended"
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=PROCESS_TIMEOUT)
    return value
