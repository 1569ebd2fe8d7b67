"""Keyboard input of the full-screen app that is not UTF-8 (``dsvl_tui.tui.driver``).

Textual's own driver decodes the terminal strictly: one bad byte killed its
input thread and the app exited, with code 0. The first tests drive the
driver's input loop on a pipe; the last runs the real command on a
pseudo-terminal and types the byte.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from process_support import PROCESS_TIMEOUT
from rich.text import Text
from textual import events
from textual.message import Message

from dsvl_tui.core.crash import CRASH_LOG
from dsvl_tui.tui.driver import InputDriver

ROOT = Path(__file__).resolve().parents[2]


class BareDriver(InputDriver):
    """An ``InputDriver`` with only what its input thread uses (no terminal, no signal handlers); keys recorded."""

    def __init__(self, app: Any = None) -> None:  # Textual's __init__ takes over the terminal
        self._app = app
        self._debug = False
        self.exit_event = threading.Event()
        self.keys: list[str] = []

    def process_message(self, message: Message) -> None:
        if isinstance(message, events.Key):
            self.keys.append(message.character or "")


def test_a_byte_that_is_not_utf8_is_read_as_a_replacement_character() -> None:
    driver = BareDriver()
    keys = driver.keys
    read_end, write_end = os.pipe()
    driver.fileno = read_end
    os.write(write_end, b"a\xffb " + "é".encode() + b" \xe9!")  # 0xFF and a lead byte with no follower
    os.close(write_end)
    thread = threading.Thread(target=driver.run_input_thread)
    thread.start()
    deadline = time.monotonic() + 10
    while "!" not in keys and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    driver.exit_event.set()
    thread.join(5)
    os.close(read_end)
    assert "".join(keys) == "a\ufffdb é \ufffd!"


def test_a_failing_input_thread_ends_the_app_with_code_1_one_line_and_the_crash_log(
        monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DSVL_DATA_DIR", str(tmp_path))
    calls: list[tuple] = []

    class App:
        def call_later(self, callback, *args) -> None:
            calls.append((callback, *args))

        def exit(self, *args) -> None:
            pass

    app = App()
    driver = BareDriver(app)

    def broken() -> None:
        raise RuntimeError("the parser broke")

    monkeypatch.setattr(driver, "run_input_thread", broken)
    driver._run_input_thread()
    (callback, result, code, message), = calls
    assert callback == app.exit and code == 1 and isinstance(message, Text)
    assert message.plain == (f"error: unexpected RuntimeError: the parser broke "
                             f"(traceback in {tmp_path / CRASH_LOG}; please report it)")
    assert "in broken" in (tmp_path / CRASH_LOG).read_text()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
def test_the_app_on_a_terminal_keeps_running_after_a_bad_byte_and_quits_with_0(tmp_path) -> None:
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSVL_", "TEXTUAL"))}
    env.update(TERM="xterm-256color", DSVL_DATA_DIR=str(tmp_path / "data"), DSVL_CONFIG_DIR=str(tmp_path / "config"),
               PYTHONPATH=str(ROOT), COLUMNS="100", LINES="30", HF_HUB_OFFLINE="1")
    # A hub id not in the cache, offline: the load fails in the app (a folder that is not there is a usage error).
    process = subprocess.Popen(
        [sys.executable, "-m", "dsvl_tui.cli", "--model", "nobody/no-model"],
        stdin=terminal, stdout=terminal, stderr=terminal, env=env, cwd=tmp_path, start_new_session=True)
    os.close(terminal)
    screen = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()

    def wait_for(text: bytes, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and process.poll() is None:
            if text in screen:
                return True
            time.sleep(0.05)
        return text in screen

    try:
        assert wait_for(b"no-model", PROCESS_TIMEOUT), bytes(screen[-2000:])  # the first screen, with the failed load
        mark = len(screen)
        os.write(controller, b"ab\xffcd")
        assert wait_for("\ufffdcd".encode(), 20) and process.poll() is None, bytes(screen[mark:][-2000:])
        time.sleep(0.5)
        assert process.poll() is None, bytes(screen[mark:][-2000:])  # still running
        os.write(controller, b"\x11")  # Ctrl+Q
        assert process.wait(PROCESS_TIMEOUT) == 0, bytes(screen[-2000:])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
