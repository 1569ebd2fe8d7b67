"""Tests of the ``dsvl-chat`` command and its text helpers.

The real engine is not imported here: the chat-loop tests put a small fake
``engine`` module in ``sys.modules`` that follows the engine's documented API
(``load``, ``Message``, ``GenerationSettings``, ``EngineError``, ``stream``).
"""

from __future__ import annotations

import subprocess
import sys
import types
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from dsvl_tui import __version__
from dsvl_tui.cli import DEFAULT_MODEL, app
from dsvl_tui.text import printable

HEAVY = ("torch", "transformers", "textual", "engine")
runner = CliRunner()


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60)


# --- start-up stays light ---------------------------------------------------


def test_importing_cli_imports_nothing_heavy() -> None:
    code = f"import sys, dsvl_tui.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    proc = _python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_nothing_heavy(flag: str) -> None:
    code = (
        "import sys\nfrom dsvl_tui.cli import main\n"
        f"try:\n    main([{flag!r}])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    proc = _python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_python_m_version() -> None:
    proc = _python("-m", "dsvl_tui.cli", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"dsvl-chat {__version__}\n"


def test_version_flag() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == "dsvl-chat 0.1.0\n"


def test_help_lists_options() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert result.exit_code == 0
    for option in ("--model", "--device", "--dtype", "--system", "--temperature",
                   "--top-p", "--max-new-tokens", "--theme", "--version", "DSVL_MODEL"):
        assert option in result.output


# --- printable ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("\x1b[31mred\x1b[0m", "red"),
        ("bell\x07!", "bell!"),
        ("\x9b2Jcleared", "cleared"),
        ("\x1b]0;evil title\x07ok", "ok"),
        ("over\rwrite", "overwrite"),
        ("nul\x00 del\x7f c1\x85", "nul del c1"),
        ("line one\nline two\n\tindented", "line one\nline two\n\tindented"),
        ("héllo 世界 — ok ✓", "héllo 世界 — ok ✓"),
    ],
)
def test_printable(raw: str, clean: str) -> None:
    assert printable(raw) == clean


def test_printable_leaves_no_escape_from_a_partial_sequence() -> None:
    # A stream may cut a sequence in two; each half must still be harmless.
    assert "\x1b" not in printable("\x1b[3") + printable("1mred")


@given(st.text())
def test_printable_output_has_no_controls(text: str) -> None:
    out = printable(text)
    assert all(ch in "\n\t" or not (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F) for ch in out)


@given(st.text(st.characters(exclude_categories=("Cc",))))
def test_printable_keeps_text_without_controls(text: str) -> None:
    assert printable(text) == text


# --- the interim chat loop, against a fake engine ----------------------------


class FakeEngineError(Exception):
    pass


@dataclass
class FakeMessage:
    role: str
    text: str


@dataclass
class FakeSettings:
    temperature: float = 0.2
    top_p: float = 0.95
    max_new_tokens: int = 512

    def __post_init__(self) -> None:
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")


class FakeStream:
    def __init__(self, chunks: list, error: str | None = None) -> None:
        self.chunks = chunks
        self.stats = types.SimpleNamespace(error=error)

    def __iter__(self):
        for chunk in self.chunks:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk


class FakeEngine:
    def __init__(self, replies: list[FakeStream]) -> None:
        self.replies = replies
        self.calls: list[tuple[list, FakeSettings, str | None]] = []

    def stream(self, messages, settings, *, system=None):
        self.calls.append((list(messages), settings, system))
        return self.replies.pop(0)


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch):
    module = types.ModuleType("engine")
    module.EngineError = FakeEngineError
    module.Message = FakeMessage
    module.GenerationSettings = FakeSettings
    module.loads = []
    module.engine = FakeEngine([])

    def load(model, *, device, dtype, progress):
        module.loads.append((model, device, dtype))
        progress("fake weights", 1, 1)
        if isinstance(module.engine, Exception):
            raise module.engine
        return module.engine

    module.load = load
    monkeypatch.setitem(sys.modules, "engine", module)
    for name in ("DSVL_MODEL", "DSVL_DEVICE", "DSVL_DTYPE", "DSVL_SYSTEM"):
        monkeypatch.delenv(name, raising=False)
    return module


def test_chat_streams_sanitised_replies_and_keeps_history(fake_engine) -> None:
    fake_engine.engine = FakeEngine([
        FakeStream(["Hi", " \x1b[31mthere\x1b[0m"]),
        FakeStream(["fine"]),
    ])
    result = runner.invoke(
        app, ["--device", "cpu", "--temperature", "0", "--max-new-tokens", "7"],
        input="hello\n\nhow are you\n/quit\nnot read\n", env={"DSVL_SYSTEM": "be brief"},
    )
    assert result.exit_code == 0, result.output
    assert fake_engine.loads == [(DEFAULT_MODEL, "cpu", "auto")]
    assert "Hi there" in result.stdout and "fine" in result.stdout
    assert "\x1b" not in result.stdout
    calls = fake_engine.engine.calls
    assert len(calls) == 2
    history, settings, system = calls[1]
    assert history == [
        FakeMessage("user", "hello"),
        FakeMessage("assistant", "Hi \x1b[31mthere\x1b[0m"),  # the model sees its own text
        FakeMessage("user", "how are you"),
    ]
    assert (settings.temperature, settings.top_p, settings.max_new_tokens) == (0, 0.95, 7)
    assert system == "be brief"


def test_eof_ends_the_chat(fake_engine) -> None:
    result = runner.invoke(app, [], input="")
    assert result.exit_code == 0
    assert fake_engine.engine.calls == []


def test_model_from_environment(fake_engine) -> None:
    result = runner.invoke(app, [], input="", env={"DSVL_MODEL": "/models/dsvl", "DSVL_DTYPE": "float32"})
    assert result.exit_code == 0
    assert fake_engine.loads == [("/models/dsvl", "auto", "float32")]


def test_load_failure_exits_2(fake_engine) -> None:
    fake_engine.engine = FakeEngineError("model not found: nope/nope")
    result = runner.invoke(app, ["--model", "nope/nope"], input="hello\n")
    assert result.exit_code == 2
    assert "error: model not found: nope/nope" in result.stderr


def test_bad_setting_exits_2_before_loading(fake_engine) -> None:
    result = runner.invoke(app, ["--top-p", "2"], input="")
    assert result.exit_code == 2
    assert fake_engine.loads == []


def test_turn_errors_keep_the_loop_alive(fake_engine) -> None:
    fake_engine.engine = FakeEngine([
        FakeStream(["par", FakeEngineError("out of memory")]),
        FakeStream(["x"], error="generation failed"),
        FakeStream(["ok"]),
    ])
    result = runner.invoke(app, [], input="one\ntwo\nthree\n")
    assert result.exit_code == 0
    assert "error: out of memory" in result.stderr
    assert "error: generation failed" in result.stderr
    history = fake_engine.engine.calls[2][0]
    assert history == [FakeMessage("user", "three")]  # failed turns are dropped
