"""Serve in front of a batching engine: ``--max-batch`` requests run at once, the queue is admission control.

The engine is the real tiny one with ``max_batch=2``; ``Paced`` (see
``test_queue``) holds its generations open at a gate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import engine
from dsvl_tui import cli
from dsvl_tui.serve import server
from dsvl_tui.serve.app import create_app
from dsvl_tui.serve.requests import Limits
from tests.serve.conftest import health, running_server, wait_for
from tests.serve.test_queue import Paced, in_thread, post, request


class Batched(Paced):
    """``Paced`` with the engine's own ``max_batch``, which the server reads to size its running places."""

    def __init__(self, eng: Any):
        super().__init__(eng)
        self.max_batch = eng.max_batch


@pytest.fixture(scope="module")
def batching_engine(tiny_siglip: Path) -> Any:
    return engine.load(str(tiny_siglip), device="cpu", max_batch=2)


def test_max_batch_requests_run_the_rest_wait_and_beyond_the_queue_is_503(batching_engine: Any) -> None:
    backend = Batched(batching_engine)
    sizes: list[int] = []
    hook = batching_engine.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True)
    try:
        with running_server(create_app(backend, model_name="tiny", limits=Limits(queue_size=1))) as url:
            results: list[Any] = []
            threads = [in_thread(lambda: post(url, request(max_tokens=8)), results) for _ in range(2)]
            wait_for(lambda: health(url)["running"] == 2, timeout=60)
            # Both in the engine's scheduler, which waits at the gate: they will decode together.
            wait_for(lambda: batching_engine.batch_counts() == (0, 2), timeout=60)
            assert health(url)["queued"] == 0 and health(url)["max_batch"] == 2
            threads.append(in_thread(lambda: post(url, request(max_tokens=8)), results))
            wait_for(lambda: health(url)["queued"] == 1, timeout=60)
            refused = post(url, request())
            assert refused.status_code == 503 and refused.headers["Retry-After"].isdigit()
            assert refused.json()["error"]["code"] == "queue_full"
            backend.gate.set()
            for thread in threads:
                thread.join(60)
            assert [r.status_code for r in results] == [200, 200, 200]
            assert all(r.json()["usage"]["completion_tokens"] > 0 for r in results)
            assert health(url) == {"status": "ready", "busy": False, "running": 0, "queued": 0, "max_batch": 2}
    finally:
        hook.remove()
    assert max(sizes) == 2  # the two running requests decoded together


def test_serve_and_web_pass_max_batch_to_the_engine(tiny_siglip: Path, monkeypatch: Any) -> None:
    served: dict[str, Any] = {}
    monkeypatch.delenv("DSVL_SERVE_API_KEY", raising=False)
    monkeypatch.delenv("DSVL_MAX_BATCH", raising=False)
    monkeypatch.setattr(server, "serve", lambda backend, **kwargs: served.update(kwargs, backend=backend))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--model", str(tiny_siglip), "--device", "cpu", "--max-batch", "3"])
    assert exit_info.value.code == 0
    assert served["backend"].max_batch == 3
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--model", str(tiny_siglip), "--device", "cpu"])
    assert served["backend"].max_batch == engine.default_max_batch(served["backend"].model.device)

    from dsvl_tui.web import launcher

    seen: list[Any] = []
    monkeypatch.setattr(launcher, "run_web", lambda options: seen.append(options) or 0)
    monkeypatch.delenv("DSVL_WEB_TOKEN", raising=False)
    with pytest.raises(SystemExit):
        cli.main(["web", "--max-batch", "4"])
    assert "--max-batch=4" in seen[0].engine_args


def test_max_batch_below_one_is_a_usage_error(capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--max-batch", "0"])
    assert exit_info.value.code == 2
    assert "--max-batch" in capsys.readouterr().err


def test_max_batch_with_an_endpoint_is_a_usage_error() -> None:
    import typer

    with pytest.raises(typer.BadParameter, match=r"--max-batch is for a model loaded here.*DSVL_MAX_BATCH"):
        cli.build_options({"max_batch": 2, "endpoint": "http://127.0.0.1:9/v1"})
    assert cli.build_options({"max_batch": 2}).max_batch == 2
    assert cli.build_options({}).max_batch is None  # the engine's default for its device
