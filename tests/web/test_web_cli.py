"""``dsvl-chat web`` on the command line: usage errors before anything starts, and a model that cannot load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from process_support import PROCESS_TIMEOUT

from dsvl_tui.cli import main
from dsvl_tui.web.launcher import free_port, public_url

ROOT = Path(__file__).resolve().parents[2]


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    return capsys.readouterr().err


def test_another_host_than_loopback_needs_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(["web", "--host", "0.0.0.0"], capsys)
    assert "--host 0.0.0.0 is reachable from other machines: give --token" in err and err.count("\n") == 1
    assert "--token is too short: use 8 characters or more" in usage_error(["web", "--token", "short"], capsys)
    assert "starts its own model server" in usage_error(["--endpoint", "http://x", "web"], capsys)
    assert "temperature" in usage_error(["--temperature", "-1", "web"], capsys)  # the tabs' settings checked too


def test_public_url() -> None:
    assert public_url("127.0.0.1", 8080) == "http://127.0.0.1:8080"
    assert public_url("::1", 80) == "http://[::1]"


@pytest.mark.slow
def test_a_model_that_cannot_load_ends_it_with_exit_code_4_and_nothing_left(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch)}  # where its runtime folder goes
    (tmp_path / "missing").mkdir()  # a folder with no model in it (one not there at all is a usage error, 2)
    done = subprocess.run([sys.executable, "-m", "dsvl_tui.cli", "web", "--model", str(tmp_path / "missing"),
                           "--port", str(free_port())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=PROCESS_TIMEOUT)
    assert done.returncode == 4, done.stderr
    assert done.stdout == ""  # no URL printed
    assert done.stderr.rstrip().endswith("error: the model server did not start (its output is above)")
    assert str(tmp_path / "missing") in done.stderr  # the model server's own error line, shown
    assert list(scratch.glob("dsvl-web-*")) == []  # its runtime folder removed (torch may leave its own caches)


@pytest.mark.slow
def test_without_textual_serve_it_says_what_to_install_before_starting_anything(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import dsvl_tui.web.launcher as launcher

    real = launcher.find_spec
    monkeypatch.setattr(launcher, "find_spec", lambda name: None if name == "textual_serve" else real(name))
    monkeypatch.setattr(launcher.subprocess, "Popen", None)  # nothing may be started
    assert launcher.run_web(launcher.WebOptions()) == 1
    assert capsys.readouterr().err == "error: dsvl-chat web needs textual_serve: pip install 'dsvl-chat[web]'\n"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_while_the_model_loads_stops_the_model_server(tiny_siglip: Path, sig: int) -> None:
    import psutil

    argv = [sys.executable, "-m", "dsvl_tui.cli", "web", "--model", str(tiny_siglip), "--port", str(free_port())]
    web = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert web.stderr is not None and web.stderr.readline() == "loading the model ...\n"
        children = psutil.Process(web.pid).children(recursive=True)
        assert [child.cmdline()[3] for child in children] == ["serve"]
        web.send_signal(sig)
        assert web.wait(30) == 130
        assert web.stdout is not None and web.stdout.read() == ""
        for child in children:
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    finally:
        if web.poll() is None:
            web.kill()


@pytest.mark.slow
def test_the_model_servers_output_is_kept_bounded_in_memory() -> None:
    """It logs a line per request for as long as it runs: the launcher keeps only a tail, no growing file."""
    from dsvl_tui.web.launcher import OutputTail

    writer = subprocess.Popen([sys.executable, "-c", "import sys\nfor n in range(5000): print('request', n)\n"
                               "print('x' * 1000); print('error: the last line')"], stdout=subprocess.PIPE)
    assert writer.stdout is not None
    tail = OutputTail(writer.stdout, lines=50, width=100)
    writer.wait(30)
    shown = tail.text(lines=50).splitlines()
    assert len(shown) == 50 and shown[-1] == "error: the last line"
    assert all(len(line) <= 100 for line in shown) and "request 4999" in shown


# --- the secret (issue 20) ----------------------------------------------------------------------


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """``run_web`` replaced: the options it would have started with, and nothing started."""
    import dsvl_tui.web.launcher as launcher

    calls: list[object] = []
    monkeypatch.delenv("DSVL_WEB_TOKEN", raising=False)
    monkeypatch.setattr(launcher, "run_web", lambda options: calls.append(options) or 0)
    return calls


def web_runs(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 0
    return capsys.readouterr().err


def test_a_token_on_the_command_line_warns_and_one_from_the_environment_does_not(
        started: list[object], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from dsvl_tui.web.secret import COMMAND_LINE_WARNING

    err = web_runs(["web", "--token", "a-token-of-mine"], capsys)
    assert err == COMMAND_LINE_WARNING + "\n"
    assert "/proc/PID/cmdline" in err and "DSVL_WEB_TOKEN" in err and "--token-file" in err
    monkeypatch.setenv("DSVL_WEB_TOKEN", "another-token-of-mine")
    assert web_runs(["web"], capsys) == ""
    assert [options.token for options in started] == ["a-token-of-mine", "another-token-of-mine"]  # type: ignore[attr-defined]
    monkeypatch.delenv("DSVL_WEB_TOKEN")
    assert web_runs(["web"], capsys) == ""
    assert started[-1].token is None  # type: ignore[attr-defined]  # the launcher generates one


def test_a_token_file_is_read_and_refused_when_others_can_read_it_or_it_is_not_a_token(
        started: list[object], capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  the-token-in-a-file\n")
    token_file.chmod(0o600)
    assert web_runs(["web", "--token-file", str(token_file)], capsys) == ""
    assert started[-1].token == "the-token-in-a-file"  # type: ignore[attr-defined]

    def refused(content: str | None, mode: int = 0o600, path: Path = token_file) -> str:
        if content is not None:
            path.write_text(content)
            path.chmod(mode)
        err = usage_error(["web", "--token-file", str(path)], capsys)
        assert err.count("\n") == 1 and err.startswith("error: "), err
        return err

    refusal = refused("a-long-token", 0o644)
    assert f"can be read or written by other users (mode 0644): chmod 600 {token_file}" in refusal
    assert "(mode 0620)" in refused("a-long-token", 0o620)
    assert "is empty" in refused(" \n")
    assert "too short: use 8 characters or more" in refused("short\n")
    assert "spaces or control characters" in refused("two words\n")
    assert "no such file" in refused(None, path=tmp_path / "missing")
    assert "a folder, not a file" in refused(None, path=tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    assert "a named pipe (FIFO), not a file" in refused(None, path=fifo)  # and no wait for a writer
    token_file.write_text("the-token-in-a-file")
    token_file.chmod(0o600)
    monkeypatch.setenv("DSVL_WEB_TOKEN", "and-one-in-the-environment")
    assert "both give the token: give one" in usage_error(["web", "--token-file", str(token_file)], capsys)
    assert len(started) == 1


def test_a_secret_shorter_than_16_characters_is_refused_off_loopback(
        started: list[object], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSVL_WEB_TOKEN", "15-characters-x")
    err = usage_error(["web", "--host", "0.0.0.0"], capsys)
    assert "--token is too short for --host 0.0.0.0, which other machines reach: use 16 characters or more" in err
    assert err.count("\n") == 1
    monkeypatch.setenv("DSVL_WEB_TOKEN", "16-characters-xx")
    assert web_runs(["web", "--host", "0.0.0.0"], capsys) == ""
    monkeypatch.setenv("DSVL_WEB_TOKEN", "short-ok")  # 8 characters: enough on loopback
    assert web_runs(["web"], capsys) == ""
    err = usage_error(["serve", "--host", "0.0.0.0", "--api-key", "15-characters-x"], capsys)
    assert "--api-key is too short for --host 0.0.0.0, which other machines reach: use 16 characters or more" in err
    assert len(started) == 2
