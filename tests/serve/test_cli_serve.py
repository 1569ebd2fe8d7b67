"""``dsvl-chat serve``: safe defaults on the command line, the model loaded by the one loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dsvl_tui import cli
from dsvl_tui.serve import server
from dsvl_tui.serve.requests import Limits, MiB


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.org", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert server.is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5"])
def test_exposed_host_without_a_key_is_a_usage_error(host: str, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("DSVL_SERVE_API_KEY", raising=False)
    monkeypatch.setattr(server, "serve", lambda *a, **k: pytest.fail("must not serve"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--host", host])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--api-key" in err and host in err


def test_serve_loads_the_model_and_serves_it_with_the_limits(tiny_siglip: Path, capsys: Any, monkeypatch: Any) -> None:
    served: dict[str, Any] = {}

    def fake_serve(backend: Any, **kwargs: Any) -> None:
        served.update(kwargs, backend=backend)

    monkeypatch.setattr(server, "serve", fake_serve)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--model", str(tiny_siglip), "--device", "cpu", "--host", "0.0.0.0", "--api-key", "k" * 16,
                  "--port", "8123", "--max-images", "2", "--queue-size", "3", "--max-body-mib", "4"])
    assert exit_info.value.code == 0
    assert served["backend"].info.device == "cpu"
    assert (served["host"], served["port"], served["api_key"]) == ("0.0.0.0", 8123, "k" * 16)
    assert served["limits"] == Limits(max_body_bytes=4 * MiB, max_images=2, queue_size=3)


def test_the_default_limits_are_32_mib_8_images_and_16_queued() -> None:
    assert Limits() == Limits(max_body_bytes=32 * MiB, max_images=8, queue_size=16)
    assert (Limits().max_body_bytes, Limits().max_images, Limits().queue_size) == (33554432, 8, 16)


def test_serve_without_limit_options_serves_with_the_default_limits(tiny_siglip: Path, monkeypatch: Any) -> None:
    served: dict[str, Any] = {}
    monkeypatch.delenv("DSVL_SERVE_API_KEY", raising=False)
    monkeypatch.setattr(server, "serve", lambda backend, **kwargs: served.update(kwargs))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--model", str(tiny_siglip), "--device", "cpu"])
    assert exit_info.value.code == 0
    assert served["limits"] == Limits()
    assert served["host"] == "127.0.0.1"


def test_serve_without_a_key_makes_one_even_on_loopback(tiny_siglip: Path, monkeypatch: Any) -> None:
    """Every account on the machine can reach loopback: the server is never open unless asked to be."""
    keys = []
    monkeypatch.delenv("DSVL_SERVE_API_KEY", raising=False)
    monkeypatch.setattr(server, "serve", lambda backend, **kwargs: keys.append((kwargs["api_key"], kwargs["made_key"])))
    for _ in range(2):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["serve", "--model", str(tiny_siglip), "--device", "cpu"])
        assert exit_info.value.code == 0
    assert all(made and len(key) >= 43 for key, made in keys)  # 32 random bytes, base64: 256 bits
    assert keys[0][0] != keys[1][0]
    monkeypatch.setenv("DSVL_SERVE_API_KEY", "my-own-key-of-16+")
    with pytest.raises(SystemExit):
        cli.main(["serve", "--model", str(tiny_siglip), "--device", "cpu"])
    assert keys[-1] == ("my-own-key-of-16+", False)


def test_a_key_on_the_command_line_is_one_note_and_from_the_environment_none(tiny_siglip: Path, capsys: Any,
                                                                            monkeypatch: Any) -> None:
    monkeypatch.setattr(server, "serve", lambda backend, **kwargs: None)
    monkeypatch.setenv("DSVL_SERVE_API_KEY", "k" * 20)
    for argv, notes in ([], 0), (["--api-key", "q" * 20], 1):
        with pytest.raises(SystemExit):
            cli.main(["serve", "--model", str(tiny_siglip), "--device", "cpu", *argv])
        err = capsys.readouterr().err
        assert err.count("visible to every account") == notes and "q" * 20 not in err


def test_no_api_key_serves_open_on_loopback_only(tiny_siglip: Path, capsys: Any, monkeypatch: Any) -> None:
    served: dict[str, Any] = {}
    monkeypatch.delenv("DSVL_SERVE_API_KEY", raising=False)
    monkeypatch.setattr(server, "serve", lambda backend, **kwargs: served.update(kwargs))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--model", str(tiny_siglip), "--device", "cpu", "--no-api-key"])
    assert exit_info.value.code == 0 and (served["api_key"], served["made_key"]) == (None, False)
    capsys.readouterr()
    for argv in (["--host", "0.0.0.0"], ["--api-key", "k" * 20]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["serve", "--model", str(tiny_siglip), "--no-api-key", *argv])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_a_made_key_is_printed_once_and_an_open_server_says_so(tiny_engine: Any, capsys: Any,
                                                             monkeypatch: Any) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    server.serve(tiny_engine, api_key="the-made-key", made_key=True)
    err = capsys.readouterr().err
    assert err.count("the-made-key") == 1 and "(API key required)" in err
    server.serve(tiny_engine, api_key=None)
    assert "every account on this machine can use it" in capsys.readouterr().err


def test_serve_help_says_who_can_reach_a_server_without_a_key() -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--no-api-key" in text and "every account on this machine" in text


def test_a_model_that_does_not_load_is_one_line_and_exit_4(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "not-a-model").mkdir()  # there, so the CLI passes it on (a missing folder is a usage error, 2)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--model", str(tmp_path / "not-a-model"), "--device", "cpu"])
    assert exit_info.value.code == 4
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: ")
