"""The one clipboard path: OSC 52 through the terminal, or through tmux when the app runs inside it."""

from __future__ import annotations

import base64
import os
import pty
import select
import shutil
import subprocess
import time
import uuid

import pytest

from dsvl_tui.tui import clipboard
from dsvl_tui.tui.clipboard import ClipboardError, copy, tmux_passthrough

TEXT = "naïve code\n  x = 1"
PLAIN = "\x1b]52;c;" + base64.b64encode(TEXT.encode()).decode() + "\x07"


class FakeTmux:
    """Answers ``tmux ARGS`` as a tmux with the given settings would."""

    def __init__(self, *, load_buffer_w: bool = True, set_clipboard: str = "external",
                 passthrough: str | None = "off") -> None:
        self.load_buffer_w, self.set_clipboard, self.passthrough = load_buffer_w, set_clipboard, passthrough
        self.calls: list[tuple[tuple[str, ...], bytes]] = []

    def __call__(self, args, stdin: bytes) -> tuple[int, str]:
        self.calls.append((tuple(args), stdin))
        if args[0] == "load-buffer":
            return (0, "") if self.load_buffer_w else (1, "")
        if args[-1] == "set-clipboard":
            return 0, self.set_clipboard
        if args[-1] == "allow-passthrough":
            return (1, "") if self.passthrough is None else (0, self.passthrough)
        raise AssertionError(args)


def test_outside_tmux_the_terminal_gets_osc52() -> None:
    written: list[str] = []
    tmux = FakeTmux()
    copy(TEXT, written.append, env={"TERM": "xterm-256color"}, tmux=tmux)
    assert written == [PLAIN] and tmux.calls == []


def test_inside_tmux_the_text_goes_to_tmux_which_forwards_it() -> None:
    written: list[str] = []
    tmux = FakeTmux()  # tmux's defaults: set-clipboard external would drop an app's OSC 52
    copy(TEXT, written.append, env={"TMUX": "/tmp/tmux-0/default,1,0", "TERM": "tmux-256color"}, tmux=tmux)
    assert written == []
    assert tmux.calls == [(("load-buffer", "-w", "-"), TEXT.encode())]


def test_tmux_without_load_buffer_w_uses_what_its_settings_let_through() -> None:
    env = {"TMUX": "/tmp/tmux-0/default,1,0"}
    written: list[str] = []
    copy(TEXT, written.append, env=env, tmux=FakeTmux(load_buffer_w=False, set_clipboard="on"))
    assert written == [PLAIN]
    written.clear()  # tmux before 3.3 has no allow-passthrough option and always passes through
    copy(TEXT, written.append, env=env, tmux=FakeTmux(load_buffer_w=False, passthrough=None))
    assert written == [tmux_passthrough(PLAIN)]


def test_tmux_that_lets_nothing_through_says_what_to_set_and_writes_nothing() -> None:
    written: list[str] = []
    with pytest.raises(ClipboardError) as caught:
        copy(TEXT, written.append, env={"TMUX": "/tmp/tmux-0/default,1,0"}, tmux=FakeTmux(load_buffer_w=False))
    assert "set -g set-clipboard on" in str(caught.value) and "\n" not in str(caught.value)
    assert written == []


def test_passthrough_doubles_every_escape_inside_the_wrapper() -> None:
    assert tmux_passthrough("\x1b]52;c;aGk=\x07") == "\x1bPtmux;\x1b\x1b]52;c;aGk=\x07\x1b\\"


def test_too_long_is_refused_before_anything_is_sent() -> None:
    tmux = FakeTmux()
    with pytest.raises(ClipboardError, match="too long"):
        copy("x" * 200_000, lambda s: None, env={"TMUX": "/tmp/x,1,0"}, tmux=tmux)
    assert tmux.calls == []


# --- a real tmux ---------------------------------------------------------------------------------

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _read_until(fd: int, needle: bytes, seconds: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


@pytest.mark.slow
@needs_tmux
def test_real_tmux_with_its_default_settings_forwards_the_copy_to_the_outer_terminal(monkeypatch) -> None:
    """A tmux client attached in a pseudo-terminal stands for the user's terminal: what the app copies
    must arrive there as OSC 52, with tmux's default ``set-clipboard external``."""
    socket = f"dsvl-test-{uuid.uuid4().hex[:8]}"
    pid, fd = pty.fork()
    if pid == 0:  # the user's terminal, running tmux
        os.environ.pop("TMUX", None)
        os.environ["TERM"] = "xterm-256color"  # tmux's terminal-features give xterm* the clipboard
        os.execvp("tmux", ["tmux", "-L", socket, "-f", os.devnull, "new", "-s", "s", "-x", "80", "-y", "24",
                           "sleep 30"])
    try:
        _read_until(fd, b"\x1b[?1049h", 5)  # the client has started drawing
        show = subprocess.run(["tmux", "-L", socket, "display", "-p", "#{socket_path}"], capture_output=True,
                              text=True, check=True)
        monkeypatch.setenv("TMUX", f"{show.stdout.strip()},1,0")
        assert subprocess.run(["tmux", "-L", socket, "show", "-sv", "set-clipboard"], capture_output=True,
                              text=True).stdout.strip() == "external"
        written: list[str] = []
        copy(TEXT, written.append)
        assert written == []  # tmux took it
        outer = _read_until(fd, b"\x1b]52;", 5)
        assert b"\x1b]52;" in outer
        payload = outer.split(b"\x1b]52;", 1)[1].split(b";", 1)[1]
        end = min(i for i in (payload.find(b"\x07"), payload.find(b"\x1b\\")) if i >= 0)
        assert base64.b64decode(payload[:end]).decode() == TEXT
        buffer = subprocess.run(["tmux", "-L", socket, "show-buffer"], capture_output=True, text=True)
        assert buffer.stdout == TEXT  # and prefix + ] pastes it inside tmux
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
        os.close(fd)
        os.waitpid(pid, 0)


def test_default_runner_reports_a_missing_tmux(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert clipboard.run_tmux(["-V"]) == (-1, "")
