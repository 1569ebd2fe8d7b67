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
        cli.main(["serve", "--model", str(tiny_siglip), "--device", "cpu", "--host", "0.0.0.0", "--api-key", "k",
                  "--port", "8123", "--max-images", "2", "--queue-size", "3", "--max-body-mib", "4"])
    assert exit_info.value.code == 0
    assert served["backend"].info.device == "cpu"
    assert (served["host"], served["port"], served["api_key"]) == ("0.0.0.0", 8123, "k")
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
    assert (served["host"], served["api_key"]) == ("127.0.0.1", None)


def test_a_model_that_does_not_load_is_one_line_and_exit_4(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "not-a-model").mkdir()  # there, so the CLI passes it on (a missing folder is a usage error, 2)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--model", str(tmp_path / "not-a-model"), "--device", "cpu"])
    assert exit_info.value.code == 4
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: ")
