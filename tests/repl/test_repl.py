"""The plain REPL driven through prompt-toolkit's pipe input, on a real tiny checkpoint.

Keys go in as a terminal sends them: Enter is "\\r", Esc-Enter "\\x1b\\r",
Ctrl+C "\\x03", Ctrl+D "\\x04". Everything typed is queued before the REPL
starts; prompt-toolkit keeps what one prompt did not read for the next.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image
from process_support import PROCESS_TIMEOUT
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

import engine
from dsvl_tui.core.options import Options
from dsvl_tui.core.text import printable
from dsvl_tui.repl.app import Repl
from dsvl_tui.repl.input import SlashCompleter
from dsvl_tui.repl.printers import MarkdownPrinter
from engine.testing.random_checkpoints import write_checkpoint
from engine.types import GenerationSettings

SHORT = GenerationSettings(max_new_tokens=8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("repl") / "tiny", seed=7)


@pytest.fixture(scope="module")
def backend(checkpoint):
    return engine.load(str(checkpoint))


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):  # data and config folders: conftest's private_dirs
    monkeypatch.chdir(tmp_path)


class Run:
    """A REPL session: what was typed, and what came out."""

    def __init__(self, repl: Repl, out: io.StringIO, err: io.StringIO, code: int) -> None:
        self.repl, self.code = repl, code
        self.out, self.err = out.getvalue(), err.getvalue()

    @property
    def messages(self):
        return self.repl.conversation.messages


def drive(keys: str, backend, *, settings: GenerationSettings = SHORT, factory=None, err=None, wrap=None,
          colour: bool = False) -> Run:
    """Type ``keys`` into a REPL on ``backend`` (ending with Ctrl+D) and run it to the end."""
    out, err = io.StringIO(), err or io.StringIO()
    options = Options(model="tiny", settings=settings)
    with create_pipe_input() as pipe:
        pipe.send_text(keys + "\x04")
        repl = Repl(options, engine_factory=factory or (lambda model, progress: wrap(repl) if wrap else backend),
                    input=pipe, output=DummyOutput(), stdout=out, stderr=err, colour=colour)
        code = repl.run()
    return Run(repl, out, err, code)


def _png(path: Path) -> Path:
    Image.new("RGB", (32, 24), "blue").save(path)
    return path


# --- messages and answers ---------------------------------------------------------------


def test_a_message_gets_a_streamed_answer_and_stats(backend) -> None:
    run = drive("What is in the picture?\r", backend)
    assert run.code == 0
    user, answer = run.messages
    assert user.text == "What is in the picture?"
    assert answer.role == "assistant" and answer.stats.new_tokens == 8 and not answer.stopped
    assert run.out.rstrip("\n") == printable(answer.text).rstrip("\n")  # stdout: the answer, nothing else
    assert "8 tokens" in run.err and "stopped at max_new_tokens" in run.err
    assert "waiting for" not in run.out


def test_esc_enter_makes_a_multi_line_message_and_history_is_saved(backend, tmp_path) -> None:
    run = drive("line one\x1b\rline two\r", backend)
    assert run.messages[0].text == "line one\nline two"
    assert "line two" in (tmp_path / "data" / "repl_history").read_text()


def test_a_leading_double_slash_sends_a_slash(backend) -> None:
    run = drive("//etc/hosts is a file\r", backend)
    assert run.messages[0].text == "/etc/hosts is a file"


def test_new_starts_from_the_current_settings(backend) -> None:
    run = drive("/set temperature 0.5\rhi\r/new\r", backend)
    assert run.repl.conversation.messages == []  # a new conversation...
    assert run.repl.conversation.settings.temperature == 0.5  # ...that keeps what /set chose


def test_set_then_set_lists_and_reaches_the_engine(backend) -> None:
    run = drive("/set temperature 0\r/set\rhi\r/regenerate\r", backend)
    assert "temperature=0.0 (from the next answer, for this conversation; /new starts from it)" in run.err
    assert "temperature=0.0  top_p=0.95" in run.err
    first_text = printable(run.messages[1].text)
    assert run.out.count(first_text) >= 2  # greedy: /regenerate gives the same answer
    assert run.messages[1].stats.new_tokens == 8


def test_image_good_and_bad_then_sent_with_the_message(backend, tmp_path) -> None:
    _png(tmp_path / "photo one.png")
    (tmp_path / "fake.png").write_text("text")
    run = drive("/image 'photo one.png' fake.png\rWhat colour?\rno image now\r", backend)
    assert "attached photo one.png (1 image for your next message)" in run.err
    assert "error: not an image file" in run.err and "fake.png" in run.err
    first, answer, second, _ = run.messages
    assert [a.label for a in first.images] == ["photo one.png"] and second.images == []
    # The image took its slots in the prompt: the first turn's prompt is longer than the text alone.
    text_only = len(backend.prepare([engine.Message("user", "What colour?")]).input_ids)
    assert answer.stats.prompt_tokens > text_only


def test_unknown_command_says_did_you_mean(backend) -> None:
    run = drive("/regenrate\r/zzzz\r", backend)
    assert "error: unknown command /regenrate; did you mean /regenerate?" in run.err
    assert "error: unknown command /zzzz; type /help for the list" in run.err
    assert run.messages == []


def test_undo_and_regenerate(backend) -> None:
    run = drive("one\rtwo\r/undo\r/regenerate\r", backend)
    assert "removed the last turn (2 messages)" in run.err
    assert [m.text for m in run.messages if m.role == "user"] == ["one"]
    assert len(run.messages) == 2 and run.err.count("8 tokens") == 3  # three answers were given


def test_edit_puts_the_message_back_at_the_prompt(backend) -> None:
    run = drive("first try\r/edit\r again\r", backend)  # the prompt opens with "first try"
    assert [m.text for m in run.messages if m.role == "user"] == ["first try again"]


def test_save_and_load_round_trip(backend, tmp_path) -> None:
    run = drive("hello\r/save chat.json\r/reset\r/load chat.json\r", backend)
    assert f"saved to {tmp_path / 'chat.json'}" in run.err
    assert "conversation cleared" in run.err and "opened" in run.err
    assert [m.text for m in run.messages][0] == "hello" and len(run.messages) == 2
    assert run.repl.conversation.path == tmp_path / "chat.json"


def test_answers_are_autosaved_and_resumable(backend, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    drive("remember me\r", backend)
    long = "please remember this long question about the mountains and the sea in summer"
    drive(long + "\r", backend)
    run = drive("/resume\r/resume 2\r", backend)
    listed = run.err.split("recent conversations (/resume N opens one):\n")[1].splitlines()
    # a long entry wraps under its title (a hanging indent), its title cut at a word (issue 16)
    assert listed[0] == "  1. please remember this long question about the mountains"
    assert listed[1].startswith("     and\u2026 (2 messages, ") and listed[1].endswith(" (just now))")
    assert any(line.startswith("  2. remember me (2 messages, ") for line in listed)
    assert run.messages[0].text == "remember me"


def test_help_prints_the_commands_then_the_keys(backend, monkeypatch) -> None:
    from dsvl_tui.commands.registry import registry
    from dsvl_tui.repl.app import KEY_HELP

    monkeypatch.setenv("COLUMNS", "80")
    run = drive("/help\r/help undo\r", backend)
    usages = [c.usage for c in registry.commands("repl")]
    listed = [line.split("  ")[0] for line in run.err.splitlines() if line.startswith("/")]
    assert listed[:len(usages)] == usages  # one aligned line each, in the registry's order
    words = " ".join(run.err.split())
    assert all(" ".join(item.split()) in words for line in KEY_HELP.splitlines() for item in line.split(" \u00b7 "))
    assert "/theme" not in run.err
    assert "/undo: " in run.err  # /help COMMAND: one notice
    # at 80 columns every line fits, broken between words (it was "... \u00b7 Ta" / "b completes"; issue 16)
    shown = run.err.split("/undo: ")[0].splitlines()
    assert all(len(line) < 80 for line in shown), [line for line in shown if len(line) >= 80]
    copy = next(i for i, line in enumerate(shown) if line.startswith("/copy "))
    column = shown[copy].index("Copy an answer")
    assert shown[copy + 1].startswith(" " * column) and not shown[copy + 1][column].isspace()


class Terminal(io.StringIO):
    """stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_on_a_terminal_long_notices_break_between_words(backend, monkeypatch) -> None:
    """/help set is one long line: the terminal cut it inside words; the REPL breaks it between them."""
    monkeypatch.setenv("COLUMNS", "60")
    err = Terminal()
    drive("/help set\r", backend, err=err)
    shown = err.getvalue().split("/set [KEY [VALUE]]: ")[1].splitlines()
    assert len(shown) > 2 and all(len(line) < 60 for line in shown)
    text = registry_help("set")
    assert " ".join(" ".join(shown).split()) == " ".join(text.split())  # the same words, none cut


def registry_help(name: str) -> str:
    from dsvl_tui.commands.registry import registry

    command = registry.get(name)
    assert command is not None and command.handler.__doc__
    return f"{command.summary} {command.handler.__doc__.replace('`', '')}"


# --- keys, cancel, loading -------------------------------------------------------------------


def test_ctrl_c_at_the_prompt_clears_the_line(backend) -> None:
    run = drive("not this\x03hello\r\x03", backend)
    assert [m.text for m in run.messages if m.role == "user"] == ["hello"]
    assert "(Ctrl+D or /quit leaves)" in run.err  # Ctrl+C on an empty line explains how to leave


def test_quit_ends_the_loop(backend) -> None:
    run = drive("/quit\rnot sent\r", backend)
    assert run.code == 0 and run.messages == []


class StopAfter:
    """The real engine, with a hook run after the Nth chunk of its first answer."""

    def __init__(self, backend, after: int, hook) -> None:
        self.backend, self.after, self.hook = backend, after, hook
        self.info = backend.info
        self.fired = False

    def stream(self, messages, settings, *, system=None, cancel=None, cache_key="default"):
        inner = self.backend.stream(messages, settings, system=system, cancel=cancel)
        outer = self

        class Stream:
            stats = inner.stats
            token_ids = inner.token_ids
            close = inner.close

            def __iter__(self):
                for index, chunk in enumerate(inner, 1):
                    if index == outer.after and not outer.fired:
                        outer.fired = True
                        outer.hook()
                    yield chunk

        return Stream()


LONG = GenerationSettings(max_new_tokens=2000)


def test_stop_generation_keeps_the_partial_answer_marked_stopped(backend) -> None:
    run = drive("tell me everything\r", backend, settings=LONG,
                wrap=lambda repl: StopAfter(backend, 5, repl.stop_generation))
    answer = run.messages[-1]
    assert answer.stopped and answer.stats.stop_reason == "cancelled"
    assert 5 <= answer.stats.new_tokens < 2000 and answer.text
    assert "stopped" in run.err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to oneself is POSIX")
def test_ctrl_c_while_streaming_stops_the_answer(backend) -> None:
    """Ctrl+C during an answer reaches the process as SIGINT (the prompt is not up)."""
    before = signal.getsignal(signal.SIGINT)
    run = drive("tell me everything\r/set max_new_tokens 4\rafter\r", backend, settings=LONG,
                wrap=lambda repl: StopAfter(backend, 5, lambda: os.kill(os.getpid(), signal.SIGINT)))
    first, second = run.messages[1], run.messages[3]
    assert first.stopped and first.stats.new_tokens < 2000
    assert not second.stopped  # the REPL went on, and the next answer was not cut
    assert signal.getsignal(signal.SIGINT) is before  # restored after each answer


@pytest.mark.skipif(sys.platform == "win32", reason="a pty and SIGINT to oneself are POSIX")
def test_ctrl_c_mid_answer_on_a_terminal_draws_each_line_once(backend, monkeypatch) -> None:
    """On a real terminal, Ctrl+C's echoed ``^C`` pushed the cursor one row below the live tail,
    so the tail was erased from the wrong row and its first line stayed on screen twice (issue 16)."""
    import fcntl
    import struct
    import termios
    import time

    from rich.console import Console

    from dsvl_tui.repl.printers import MarkdownPrinter

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    received = bytearray()

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the slave side is closed
                return
            if not data:
                return
            received.extend(data)

    def press_ctrl_c() -> None:
        os.write(master, b"\x03")  # the key reaches the terminal, which echoes it unless echo is off
        time.sleep(0.3)  # the terminal's echo (if any) lands before the answer stops
        os.kill(os.getpid(), signal.SIGINT)  # and its SIGINT reaches the REPL

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    terminal = open(slave, "w", encoding="utf-8", closefd=False)  # closed below, before the slave fd
    try:
        with create_pipe_input() as pipe:
            pipe.send_text("tell me everything\r\x04")
            repl = Repl(Options(model="tiny", settings=LONG), input=pipe, output=DummyOutput(), stdout=terminal,
                        stdin=terminal, stderr=io.StringIO(), colour=True,
                        engine_factory=lambda model, progress: StopAfter(backend, 12, press_ctrl_c))
            repl.run()
        terminal.flush()
        echo_after = termios.tcgetattr(slave)[3] & termios.ECHO
    finally:
        terminal.close()
        os.close(slave)
        reader.join(10)
        os.close(master)
    answer = repl.conversation.messages[-1]
    assert answer.stopped and answer.text
    assert echo_after  # the terminal echoes again at the prompt

    expected = io.StringIO()
    printer = MarkdownPrinter(Console(file=expected, force_terminal=True, highlight=False, width=80, height=24))
    printer.feed(answer.text)
    printer.finish()
    shown = _terminal(received.decode("utf-8", "replace"), 80)
    assert "^C" not in "\n".join(shown)
    assert shown == _terminal(expected.getvalue(), 80)  # the answer once, as if never interrupted


class Announce(io.StringIO):
    """stderr that sets ``seen`` once ``text`` has been written."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.seen = text, threading.Event()

    def write(self, data: str) -> int:
        if self.text in data:
            self.seen.set()
        return super().write(data)


def test_a_message_sent_while_loading_waits_for_the_model(backend) -> None:
    err = Announce("waiting for tiny to load")

    def slow_load(model, progress):
        assert err.seen.wait(PROCESS_TIMEOUT)  # the REPL said it is waiting before the model is there
        progress(type("P", (), {"stage": "load", "message": "loading weights 1/1"})())
        return backend

    run = drive("early bird\r", backend, factory=slow_load, err=err)
    assert run.messages[1].role == "assistant" and run.messages[1].stats.new_tokens == 8
    assert err.getvalue().index("waiting for tiny") < err.getvalue().index("tiny is ready")
    assert "loading weights 1/1" in run.err


def test_a_failed_load_keeps_the_message_for_later(backend) -> None:
    def broken(model, progress):
        raise engine.ModelNotFoundError(f"model folder not found: {model}")

    run = drive("hello\r\x03/model\r", backend, factory=broken)
    assert run.err.count("model folder not found: tiny") == 1  # said when the load failed, not again
    assert "error: no model loaded; /model ID loads one" in run.err
    assert "(not sent: your message is back at the prompt)" in run.err
    assert run.messages == []


def test_without_a_terminal_lines_are_read_from_stdin(backend) -> None:
    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO("/set max_new_tokens 3\nfirst question\n/undo\nsecond question\n")
    repl = Repl(Options(model="tiny"), engine_factory=lambda model, progress: backend, stdout=out, stderr=err,
                stdin=stdin, colour=False)
    assert repl.run() == 0
    assert [m.text for m in repl.conversation.messages if m.role == "user"] == ["second question"]
    assert repl.conversation.messages[-1].stats.new_tokens == 3
    assert "dsvl-chat: loading" not in err.getvalue()  # no banner in a pipeline


def test_without_a_terminal_a_failed_load_exits_4(backend) -> None:
    def broken(model, progress):
        raise engine.CheckpointError("not a checkpoint")

    repl = Repl(Options(model="tiny"), engine_factory=broken, stdout=io.StringIO(), stderr=io.StringIO(),
                stdin=io.StringIO("hello\nnever read\n"), colour=False)
    assert repl.run() == 4


def test_without_a_terminal_a_failed_load_is_said_once(backend) -> None:
    def broken(model, progress):
        raise engine.CheckpointError("not a checkpoint XYZ")

    err = io.StringIO()
    repl = Repl(Options(model="tiny"), engine_factory=broken, stdout=io.StringIO(), stderr=err,
                stdin=io.StringIO("hello\n"), colour=False)
    assert repl.run() == 4
    assert err.getvalue().count("not a checkpoint XYZ") == 1, err.getvalue()
    assert "error: not a checkpoint XYZ\n" in err.getvalue()


def test_colour_terminals_get_markdown_rendered(backend) -> None:
    run = drive("hi\r", backend, colour=True)
    answer = run.messages[-1]
    assert answer.text and "\x1b[" in run.out  # drawn through rich, with the live tail erased


# --- completion -------------------------------------------------------------------------------


def _complete(text: str) -> list[str]:
    completer = SlashCompleter("repl")
    event = CompleteEvent(completion_requested=True)
    document = Document(text)
    return [document.text[: len(text) + c.start_position] + c.text for c in completer.get_completions(document, event)]


def test_completes_commands_from_the_registry() -> None:
    assert _complete("/re") == ["/regenerate", "/reset", "/resume"]
    assert _complete("/sa") == ["/save"]
    assert _complete("/th") == []  # /theme is for the TUI
    assert _complete("hello /sa") == []


def test_completes_image_paths_quoting_spaces(tmp_path) -> None:
    _png(tmp_path / "cat photo.png")
    _png(tmp_path / "cat.jpg")
    (tmp_path / "cats").mkdir()
    (tmp_path / "cat.txt").write_text("no")
    assert _complete("/image ca") == ["/image 'cat photo.png'", "/image cat.jpg", "/image cats"]
    assert _complete("/image a.png ca")[1] == "/image a.png cat.jpg"
    assert _complete("/image 'cat p") == ["/image 'cat photo.png'"]  # an open quote is closed
    (tmp_path / "old cats").mkdir()
    _png(tmp_path / "old cats" / "tom.png")
    assert _complete("/image old") == ["/image 'old cats"]  # a folder's quote stays open (issue 16)
    assert _complete("/image 'old cats/t") == ["/image 'old cats/tom.png'"]
    assert _complete("/load ca") == ["/load cats"]  # only transcripts (.json) and folders
    assert _complete("/save cat.t") == []
    assert _complete("/model ca") == ["/model cats"]  # a checkpoint is a folder


def test_completes_fixed_arguments() -> None:
    assert _complete("/set te") == ["/set temperature"]
    assert _complete("/help und") == ["/help undo"]
    assert _complete("/image cl") == []  # paths only; `clear` is typed out


# --- rendering ----------------------------------------------------------------------------------


def test_markdown_printer_prints_what_the_tui_draws() -> None:
    from dsvl_tui.markdown.render import DrawnMarkdown, look_for

    text = ("Intro line.\n\n1. one\n2. two\n\n```python\nx = 1\n\ny = 2\n```\n\n- a\n\n- b\n\n"
            "| k | v |\n|---|---|\n| 1 | 2 |\n\nThe end.")
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=50, height=40, color_system="standard")
    printer = MarkdownPrinter(console, interval=0)
    for start in range(0, len(text), 3):
        printer.feed(text[start:start + 3])
    printer.finish()
    drawn = DrawnMarkdown(text)
    drawn.draw(50, look_for({}, dark=True))
    expected = ["".join(segment.text for segment in line).rstrip() for line in drawn.lines()]
    assert _terminal(buffer.getvalue(), 50)[:len(expected)] == expected


def test_markdown_printer_renders_blocks_and_keeps_escapes_out() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=60, height=20, color_system="standard")
    printer = MarkdownPrinter(console, interval=0)
    text = "# Title\n\nSome **bold** text.\n\n```python\nx = 1\n```\n\nend \x1b]0;evil\x07 [link](http://x.invalid)"
    for start in range(0, len(text), 4):
        printer.feed(text[start:start + 4])
    printer.finish()
    shown = "\n".join(_terminal(buffer.getvalue(), 60))
    assert "Title" in shown and "Some bold text." in shown and "x = 1" in shown
    assert "**" not in shown and "```" not in shown and "evil" not in shown
    assert "\x1b]" not in buffer.getvalue()  # no OSC from the model, and links are not hyperlinks
    assert shown.count("Some bold text.") == 1  # the live tail was erased, not left behind


def _terminal(data: str, width: int) -> list[str]:
    """The rows a ``width``-column terminal shows for ``data`` (text, newline, CR, cursor up, erase
    line, styles dropped; a character written past the last column goes to the next row), without
    trailing blank rows."""
    import re

    from rich.cells import cell_len

    rows: list[list[str]] = [[]]
    row = col = 0
    for match in re.finditer(r"\x1b\[([0-9;?]*)([A-Za-z])|(.)", data, re.S):
        char = match.group(3)
        if char is None:
            count = int(match.group(1)) if match.group(1).isdigit() else 1
            if match.group(2) == "A":
                row = max(0, row - count)
            elif match.group(2) == "K":
                rows[row] = [] if match.group(1) == "2" else rows[row][:col]
            continue
        if char in "\r\n":
            col = 0
            row += char == "\n"
        else:
            cells = cell_len(char)
            if col + cells > width:
                row, col = row + 1, 0
            while len(rows) <= row:
                rows.append([])
            line = rows[row]
            line.extend(" " * (col + cells - len(line)))
            line[col:col + cells] = [char] + [""] * (cells - 1)
            col += cells
        while len(rows) <= row:
            rows.append([])
    shown = ["".join(line).rstrip() for line in rows]
    while shown and not shown[-1]:
        shown.pop()
    return shown


# --- text that is not valid Unicode ----------------------------------------------------------


def test_typed_bytes_that_are_not_utf8_become_replacement_characters(backend, tmp_path) -> None:
    """prompt-toolkit decodes a bad byte as a lone surrogate; the message, the engine and the history get U+FFFD."""
    out, err = io.StringIO(), io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_bytes(b"caf\xe9 \xff?\r\x04")
        repl = Repl(Options(model="tiny", settings=SHORT), engine_factory=lambda model, progress: backend,
                    input=pipe, output=DummyOutput(), stdout=out, stderr=err, colour=False)
        code = repl.run()
    assert code == 0, err.getvalue()
    user, answer = repl.conversation.messages
    assert user.text == "caf\ufffd \ufffd?"
    assert answer.stats.new_tokens == 8 and not answer.error
    assert "caf\ufffd \ufffd?" in (tmp_path / "data" / "repl_history").read_text(encoding="utf-8")


def test_piped_lines_with_surrogates_become_replacement_characters(backend) -> None:
    err = io.StringIO()
    repl = Repl(Options(model="tiny", settings=SHORT), engine_factory=lambda model, progress: backend,
                stdout=io.StringIO(), stderr=err, stdin=io.StringIO("a \udcff b\n"), colour=False)
    assert repl.run() == 0, err.getvalue()
    assert repl.conversation.messages[0].text == "a \ufffd b"
    assert repl.conversation.messages[1].stats.new_tokens == 8


def test_a_transcript_with_a_lone_surrogate_escape_loads_and_goes_on(backend, tmp_path) -> None:
    drive("hello\r/save chat.json\r", backend)
    path = tmp_path / "chat.json"
    path.write_text(path.read_text(encoding="utf-8").replace('"hello"', '"hel\\ud800lo"'), encoding="utf-8")
    run = drive("/load chat.json\rand now?\r", backend)
    assert "opened" in run.err and "Traceback" not in run.err
    assert run.messages[0].text == "hel\ufffdlo"  # valid JSON, not valid text: U+FFFD at load
    assert [m.role for m in run.messages] == ["user", "assistant", "user", "assistant"]
    assert run.messages[-1].stats.new_tokens == 8


def test_without_a_terminal_a_failed_command_makes_the_exit_code_1(backend) -> None:
    err = io.StringIO()
    repl = Repl(Options(model="tiny", settings=SHORT), engine_factory=lambda model, progress: backend,
                stdout=io.StringIO(), stderr=err, stdin=io.StringIO("/image nowhere.png\nhello\n"), colour=False)
    assert repl.run() == 1
    assert "error: " in err.getvalue() and "nowhere.png" in err.getvalue()
    assert repl.conversation.messages[-1].stats.new_tokens == 8  # the lines after it still ran


def test_start_up_says_once_that_the_model_is_ready(checkpoint) -> None:
    run = drive("hi\r", None, factory=lambda model, progress: engine.load(str(checkpoint), progress=progress))
    lines = [line for line in run.err.splitlines() if "ready" in line]
    assert len(lines) == 1 and "ready on cpu" in lines[0], run.err


@pytest.mark.slow
def test_start_up_says_what_it_imports_before_the_model_loads(checkpoint, tmp_path) -> None:
    """A cold start spends seconds importing torch and the model code before the engine says anything:
    the user is told so instead of seeing only "loading" (issue 16). A fresh interpreter, as a user's."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "dsvl_tui.cli", "--plain", "--model", str(checkpoint),
                           "--max-new-tokens", "2"], input="hi\n", capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    lines = done.stderr.splitlines()
    assert done.returncode == 0, done.stderr
    first = lines.index("importing torch")
    building = next(i for i, line in enumerate(lines) if line.startswith("building model on cpu"))
    assert first < building < next(i for i, line in enumerate(lines) if "ready on cpu" in line)


def test_copy_inside_tmux_goes_through_tmux_like_the_app(backend, monkeypatch) -> None:
    """The REPL's /copy takes the app's one clipboard path: tmux's load-buffer where it works, else the hint."""
    from dsvl_tui.tui import clipboard

    calls: list[tuple[list[str], bytes]] = []
    monkeypatch.setenv("TMUX", "/tmp/tmux-0/default,1,0")
    monkeypatch.setenv("TERM", "tmux-256color")
    monkeypatch.setattr(clipboard, "run_tmux", lambda args, stdin=b"": calls.append((list(args), stdin)) or (0, ""))
    run = drive("hello\r/copy\r", backend)
    answer = run.messages[-1].text
    assert calls == [(["load-buffer", "-w", "-"], answer.encode())]
    assert "copied" in run.err

    settings = {"set-clipboard": "external", "allow-passthrough": "off"}  # tmux's defaults: nothing gets through

    def old_tmux(args: list[str], stdin: bytes = b"") -> tuple[int, str]:
        return (0, settings[args[-1]]) if args[0] == "show" else (1, "unknown flag -w")  # before tmux 3.2

    monkeypatch.setattr(clipboard, "run_tmux", old_tmux)
    run = drive("hello\r/copy\r", backend)
    assert "set-clipboard on" in run.err and "copied" not in run.err


class RefusesSecondAnswer:
    """The real engine, refusing the second request before generating (as a prompt too long would be)."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def stream(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 2:
            raise engine.EngineError("the prompt is too long for the context window")
        return self.inner.stream(*args, **kwargs)


def test_a_refused_regenerate_keeps_the_question_and_shows_the_answer_it_had(backend) -> None:
    refusing = RefusesSecondAnswer(backend)
    run = drive("question\r/regenerate\r", backend, wrap=lambda repl: refusing)
    assert refusing.calls == 2 and "the prompt is too long" in run.err
    assert [m.role for m in run.messages] == ["user", "assistant"] and run.messages[0].text == "question"
    assert run.messages[1].stats.new_tokens == 8  # the first answer, shown again, not a branch out of sight
    assert not run.repl.conversation.alternatives
