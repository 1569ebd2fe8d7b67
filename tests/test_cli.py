"""Tests of the ``dsvl-chat`` command line and its text helpers.

What the command starts (the TUI or the REPL) and what ``ask`` is given are
checked with the front ends replaced by recorders; the front ends and
``ask`` themselves are tested on the real engine in ``test_repl`` and
``test_ask``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from process_support import PROCESS_TIMEOUT
from typer.testing import CliRunner

from dsvl_tui import __version__, cli
from dsvl_tui.cli import DEFAULT_MODEL, app
from dsvl_tui.core.crash import CRASH_LOG
from dsvl_tui.core.text import printable

HEAVY = ("torch", "transformers", "textual", "engine")
runner = CliRunner()


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=PROCESS_TIMEOUT)


# --- start-up stays light ---------------------------------------------------


@pytest.mark.slow
def test_importing_cli_imports_nothing_heavy() -> None:
    code = f"import sys, dsvl_tui.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    proc = _python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
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


@pytest.mark.slow
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
    for option in ("--model", "--device", "--dtype", "--system", "--temperature", "--top-p", "--top-k",
                   "--repetition-penalty", "--max-new-tokens", "--seed", "--revision", "--theme", "--plain",
                   "--resume", "--version", "DSVL_MODEL", "ask"):
        assert option in result.output


def test_ask_help_lists_its_options_and_exit_codes() -> None:
    result = runner.invoke(app, ["ask", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    for option in ("--image", "--json", "--transcript", "--quiet", "--temperature", "--max-new-tokens"):
        assert option in result.output
    assert "3 bad input" in result.output and "130 interrupted" in result.output


@pytest.mark.parametrize(("argv", "flags"), [
    ([], ("--compile", "--plain", "--resume", "--version", "--help")),
    (["ask"], ("--compile", "--json", "--quiet", "--help")),
    (["bench"], ("--compile", "--skip-engine", "--skip-ui", "--help")),
    (["serve"], ("--compile", "--help")),
])
def test_help_shows_flags_as_taking_no_value(argv: list[str], flags: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ --")}
    for flag in flags:
        assert "<bool>" not in lines[flag], lines[flag]  # a flag takes no value: "--compile false" is an error
    if argv == ["ask"]:
        assert "<path>" in lines["--image"] and "list[" not in result.output
    if argv == ["bench"]:
        assert "bench.json" in result.output and "uibench.json" in result.output


@pytest.mark.slow
def test_ask_help_names_its_argument_question() -> None:
    """It read ``dsvl-chat ask [OPTIONS] {question}`` (issue 26, item 10)."""
    result = runner.invoke(app, ["ask", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert "ask [OPTIONS] QUESTION " in result.output and "{" not in result.output
    assert "error: Missing argument 'QUESTION'." in _python("-m", "dsvl_tui.cli", "ask").stderr


@pytest.mark.parametrize("argv", [[], ["ask"], ["bench"], ["serve"], ["web"]])
def test_help_paragraphs_are_not_broken_where_the_source_wraps(argv: list[str]) -> None:
    """``bench --help`` broke a sentence after "bench.json (the engine's)," where its docstring did (issue 26)."""
    import inspect

    command = cli.app.registered_callback if not argv else next(
        c for c in cli.app.registered_commands if c.callback is not None and c.callback.__name__ == argv[0])
    assert command is not None and command.callback is not None
    result = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"})
    lines = [line.strip() for line in result.output.splitlines()]
    for paragraph in inspect.cleandoc(command.callback.__doc__ or "").split("\n\n"):
        assert " ".join(paragraph.split()) in lines, paragraph


@pytest.mark.slow
def test_usage_errors_are_one_line_with_exit_code_2() -> None:
    proc = _python("-m", "dsvl_tui.cli", "--no-such-flag")
    assert proc.returncode == 2
    assert proc.stderr == "error: No such option: --no-such-flag (see 'dsvl-chat --help')\n"
    proc = _python("-m", "dsvl_tui.cli", "--top-p", "2", "--plain")
    assert proc.returncode == 2 and proc.stderr.startswith("error: Invalid value: top_p must be in (0, 1]")


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


@given(st.text(st.characters(exclude_categories=("Cc", "Cs"))))
def test_printable_keeps_text_without_controls(text: str) -> None:
    # Lone surrogates (category Cs) are not valid text: printable() replaces them (tests/test_text.py).
    assert printable(text) == text




# --- what the command starts ----------------------------------------------------------


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch):
    """Replace both front ends and ``ask`` with recorders; returns what each was given."""
    import dsvl_tui.repl.app
    import dsvl_tui.repl.ask

    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(dsvl_tui.repl.app, "run_repl", lambda options: calls.append(("repl", options)) or 0)
    monkeypatch.setattr(dsvl_tui.repl.ask, "run_ask", lambda request: calls.append(("ask", request)) or 0)
    for name in ("DSVL_MODEL", "DSVL_DEVICE", "DSVL_DTYPE", "DSVL_SYSTEM", "DSVL_THEME", "DSVL_COMPILE"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_options_come_from_flags_and_environment(started, tmp_path) -> None:
    folder = tmp_path / "models" / "dsvl"  # a local model must be there: the CLI checks before loading
    folder.mkdir(parents=True)
    result = runner.invoke(app, ["--plain", "--temperature", "0", "--top-k", "5", "--seed", "3", "--resume"],
                           env={"DSVL_MODEL": str(folder), "DSVL_SYSTEM": "Be brief.", "DSVL_DTYPE": "float32"})
    assert result.exit_code == 0, result.output
    (kind, options), = started
    assert kind == "repl"
    assert (options.model, options.dtype, options.device, options.system) == (str(folder.resolve()), "float32",
                                                                             "auto", "Be brief.")
    settings = options.settings
    assert (settings.temperature, settings.top_k, settings.seed, settings.top_p) == (0, 5, 3, 0.95)
    assert options.resume


def test_defaults(started) -> None:
    assert runner.invoke(app, ["--plain"]).exit_code == 0
    (_, options), = started
    assert options.model == DEFAULT_MODEL and options.system is None and options.settings.max_new_tokens == 512


def test_every_setting_of_the_engine_is_an_option_of_the_chat_and_of_ask(started) -> None:
    import dataclasses

    from dsvl_tui.core.options import user_settings
    from engine.types import GenerationSettings

    names = [f.name for f in dataclasses.fields(GenerationSettings) if f.name != "ignore_eos"]
    assert list(user_settings()) == names
    flags = [f"--{name.replace('_', '-')}" for name in names]
    values = ["0.5", "0.5", "7", "1.5", "9", "4"]
    argv = [part for pair in zip(flags, values, strict=True) for part in pair]
    assert runner.invoke(app, [*argv, "--plain"]).exit_code == 0
    assert runner.invoke(app, ["ask", *argv, "q"]).exit_code == 0
    (_, options), (_, request) = started
    expected = GenerationSettings(0.5, 0.5, 7, 1.5, 9, 4)
    assert options.settings == expected and request.options.settings == expected
    assert request.settings_given == {"temperature": 0.5, "top_p": 0.5, "top_k": 7, "repetition_penalty": 1.5,
                                      "max_new_tokens": 9, "seed": 4}


def test_a_bad_setting_exits_2_before_anything_starts(started) -> None:
    result = runner.invoke(app, ["--max-new-tokens", "0"])
    assert result.exit_code == 2 and started == []


def test_ask_options_override_the_ones_before_it(started) -> None:
    result = runner.invoke(app, ["--max-new-tokens", "5", "--system", "Be brief.", "ask", "--temperature", "0",
                                 "--max-new-tokens", "7", "-i", "a.png", "--json", "the question"])
    assert result.exit_code == 0, result.output
    (kind, request), = started
    assert kind == "ask" and request.question == "the question" and request.json
    assert [str(p) for p in request.images] == ["a.png"]
    assert (request.options.settings.max_new_tokens, request.options.settings.temperature) == (7, 0)
    assert request.options.system == "Be brief." and request.system_given and not request.model_given
    assert request.settings_given == {"max_new_tokens": 7, "temperature": 0}


@pytest.mark.parametrize("argv", [["--compile", "ask", "q"], ["ask", "--compile", "q"], ["--compile", "--plain"]])
def test_compile_reaches_the_options_before_or_after_ask(started, argv) -> None:
    assert runner.invoke(app, argv).exit_code == 0
    (kind, given), = started
    assert getattr(given, "options", given).compile


def test_compile_is_off_unless_asked_for(started) -> None:
    assert runner.invoke(app, ["ask", "q"]).exit_code == 0
    assert runner.invoke(app, ["--plain"], env={"DSVL_COMPILE": "1"}).exit_code == 0
    (_, request), (_, options) = started
    assert not request.options.compile and options.compile


@pytest.mark.parametrize(("plain", "tty", "term", "expected"), [
    (True, True, "xterm-256color", False),
    (False, False, "xterm-256color", False),
    (False, True, "dumb", False),
    (False, True, "", False),
    (False, True, "xterm-256color", True),
])
def test_the_tui_needs_a_real_terminal(monkeypatch, plain, tty, term, expected) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty, raising=False)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: tty, raising=False)
    monkeypatch.setenv("TERM", term)
    assert cli.use_tui(plain) is expected


def test_the_tui_starts_when_it_can_and_the_repl_stands_in_when_it_cannot(monkeypatch, started, capsys) -> None:
    import dsvl_tui.tui.app

    monkeypatch.setattr(cli, "use_tui", lambda plain: True)
    monkeypatch.setattr(dsvl_tui.tui.app, "run_tui", lambda options, loader=None: started.append(("tui", options)) or 0)
    options = cli.build_options({})
    assert cli.run_chat(options, plain=False) == 0
    monkeypatch.setitem(sys.modules, "dsvl_tui.tui.app", None)  # as if the app were missing
    assert cli.run_chat(options, plain=False) == 0
    assert [kind for kind, _ in started] == ["tui", "repl"]
    assert "full-screen app is not available" in capsys.readouterr().err


def test_main_hands_its_loader_to_the_app_and_the_app_gets_none_otherwise(monkeypatch, started) -> None:
    """The UI bench's start-up child records the load's start with its own loader: an argument, not a patch."""
    import dsvl_tui.tui.app

    loaders: list[object] = []
    monkeypatch.setattr(cli, "use_tui", lambda plain: True)
    monkeypatch.setattr(dsvl_tui.tui.app, "run_tui", lambda options, loader=None: loaders.append(loader) or 0)

    def recording_loader(*args: object, **kwargs: object) -> object:
        raise AssertionError("not called: run_tui is a recorder here")

    for handed in (recording_loader, None):
        with pytest.raises(SystemExit) as exited:
            cli.main(["--model", "some/model"], loader=handed)
        assert exited.value.code == 0
    assert loaders == [recording_loader, None]


# --- unexpected errors and undecodable arguments ---------------------------------------------


def test_an_unexpected_error_exits_1_with_one_line_and_the_traceback_in_the_crash_log(
        monkeypatch, private_dirs, capsys) -> None:
    import dsvl_tui.repl.app

    def broken(options):
        raise RuntimeError("a bug\x1b[31m in\nthe REPL")

    monkeypatch.setattr(dsvl_tui.repl.app, "run_repl", broken)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--plain"])
    assert exit_info.value.code == 1
    log = private_dirs.data / CRASH_LOG
    err = capsys.readouterr().err
    assert err == f"error: unexpected RuntimeError: a bug in the REPL (traceback in {log}; please report it)\n"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text and "RuntimeError: a bug" in text


def test_bytes_that_are_not_utf8_in_a_text_argument_become_replacement_characters(started) -> None:
    # From argv, a byte that is not UTF-8 arrives as a lone surrogate (surrogateescape).
    result = runner.invoke(app, ["--system", "be \udcff brief", "--plain"])
    assert result.exit_code == 0, result.output
    (_, options), = started
    assert options.system == "be \ufffd brief"
