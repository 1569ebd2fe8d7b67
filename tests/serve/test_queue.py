"""One generation at a time over a real uvicorn server: the queue, disconnects and load.

The engine is the real tiny one; ``Paced`` only hands it a cancel event
whose per-token check waits on a gate or sleeps, so a test can hold a
generation open (the engine checks that event once per token).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from dsvl_tui.serve.app import create_app
from dsvl_tui.serve.requests import Limits
from tests.serve.conftest import health, running_server, wait_for


class PacedEvent(threading.Event):
    """The server's cancel event, checked by the engine once per token: each check waits for ``gate`` and ``delay``."""

    def __init__(self, inner: threading.Event, gate: threading.Event, delay: float):
        super().__init__()
        self.inner, self.gate, self.delay = inner, gate, delay

    def is_set(self) -> bool:
        while not self.gate.wait(0.01):
            if self.inner.is_set():
                return True
        time.sleep(self.delay)
        return self.inner.is_set()

    def set(self) -> None:
        self.inner.set()


class Paced:
    """The real engine, its generations paced by ``PacedEvent``; ``streams`` keeps each answer's stream."""

    def __init__(self, engine: Any, delay: float = 0.0):
        self.engine, self.info, self.delay = engine, engine.info, delay
        self.gate = threading.Event()
        self.streams: list[Any] = []

    def stream(self, messages: Any, settings: Any, *, system: Any = None, cancel: Any = None,
               cache_key: str = "default") -> Any:
        paced = PacedEvent(cancel or threading.Event(), self.gate, self.delay)
        stream = self.engine.stream(messages, settings, system=system, cancel=paced, cache_key=cache_key)
        self.streams.append(stream)
        return stream


def request(max_tokens: int = 3, stream: bool = False) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
            "temperature": 0, "stream": stream}


def in_thread(target: Any, results: list[Any]) -> threading.Thread:
    def run() -> None:
        try:
            results.append(target())
        except Exception as exc:  # noqa: BLE001 - the test asserts on what came back
            results.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def post(url: str, body: dict[str, Any], timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=timeout)


def test_full_queue_is_503_with_retry_after_then_everyone_is_answered(tiny_engine: Any) -> None:
    backend = Paced(tiny_engine)
    with running_server(create_app(backend, model_name="tiny", limits=Limits(queue_size=1))) as url:
        results: list[Any] = []
        first = in_thread(lambda: post(url, request()), results)
        wait_for(lambda: health(url)["busy"])
        second = in_thread(lambda: post(url, request()), results)
        wait_for(lambda: health(url)["queued"] == 1)
        refused = post(url, request())
        assert refused.status_code == 503
        assert refused.headers["Retry-After"].isdigit()
        assert refused.json()["error"]["code"] == "queue_full"
        backend.gate.set()
        first.join(30)
        second.join(30)
        assert [r.status_code for r in results] == [200, 200]
        assert health(url) == {"status": "ready", "busy": False, "running": 0, "queued": 0, "max_batch": 1}


class Recording(Paced):
    """``Paced`` that also records each request's last user text, in the order the engine gets them."""

    def __init__(self, engine: Any):
        super().__init__(engine)
        self.received: list[str] = []

    def stream(self, messages: Any, settings: Any, **kwargs: Any) -> Any:
        self.received.append(messages[-1].text)
        return super().stream(messages, settings, **kwargs)


def test_queued_requests_reach_the_engine_in_arrival_order(tiny_engine: Any) -> None:
    backend = Recording(tiny_engine)
    texts = ["first in line", "second in line", "third in line"]
    with running_server(create_app(backend, model_name="tiny", limits=Limits(queue_size=3))) as url:
        results: list[Any] = []
        threads = [in_thread(lambda: post(url, request()), results)]  # holds the engine
        wait_for(lambda: health(url)["busy"])
        for number, text in enumerate(texts, 1):
            body = {**request(), "messages": [{"role": "user", "content": text}]}
            threads.append(in_thread(lambda body=body: post(url, body), results))
            wait_for(lambda number=number: health(url)["queued"] == number)
        backend.gate.set()
        for thread in threads:
            thread.join(30)
        assert [r.status_code for r in results] == [200] * 4
        assert backend.received == ["hi", *texts]


def test_a_client_that_disconnects_mid_stream_frees_the_engine(tiny_engine: Any) -> None:
    backend = Paced(tiny_engine, delay=0.01)  # 2000 tokens would take 20 s
    backend.gate.set()
    with running_server(create_app(backend, model_name="tiny")) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=request(2000, stream=True),
                          timeout=30) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            assert next(lines) == ""
            assert next(lines).startswith("data: ")
        started = time.monotonic()
        after = post(url, request(3), timeout=10)
        assert after.status_code == 200
        assert time.monotonic() - started < 5
        first = backend.streams[0]
        assert first.stats.stop_reason == "cancelled" and first.stats.new_tokens < 1000


def test_a_queued_client_that_leaves_leaves_the_queue(tiny_engine: Any) -> None:
    backend = Paced(tiny_engine)
    with running_server(create_app(backend, model_name="tiny", limits=Limits(queue_size=1))) as url:
        results: list[Any] = []
        running = in_thread(lambda: post(url, request()), results)
        wait_for(lambda: health(url)["busy"])
        with pytest.raises(httpx.ReadTimeout):
            post(url, request(), timeout=0.5)  # waits in the queue, then gives up
        wait_for(lambda: health(url)["queued"] == 0)
        later = in_thread(lambda: post(url, request()), results)
        wait_for(lambda: health(url)["queued"] == 1)  # its place was free: queued, not refused
        backend.gate.set()
        running.join(30)
        later.join(30)
        assert [r.status_code for r in results] == [200, 200]
        assert len(backend.streams) == 2  # the one that left never reached the engine


@pytest.mark.slow
def test_load_20_clients_3_streamed_requests_each_all_answered_or_refused_memory_flat(tiny_engine: Any) -> None:
    outcomes: list[Any] = []
    lock = threading.Lock()

    def client(url: str) -> None:
        with httpx.Client(timeout=30) as http:
            for _ in range(3):
                with http.stream("POST", f"{url}/v1/chat/completions", json=request(4, stream=True)) as response:
                    lines = list(response.iter_lines()) if response.status_code == 200 else []
                    with lock:
                        outcomes.append((response.status_code, lines[-2:] if lines else response.read()))

    with running_server(create_app(tiny_engine, model_name="tiny")) as url:
        sizes = []
        for _ in range(3):  # round 3 must not need more memory than round 2 (round 1 warms caches up)
            outcomes.clear()
            threads = [threading.Thread(target=client, args=(url,), daemon=True) for _ in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert not any(thread.is_alive() for thread in threads), "a request hung"
            assert len(outcomes) == 60
            statuses = [status for status, _ in outcomes]
            assert set(statuses) <= {200, 429, 503}
            assert statuses.count(200) >= 17  # at least the running one and a full queue
            assert all(tail == ["data: [DONE]", ""] for status, tail in outcomes if status == 200)
            assert health(url)["busy"] is False and health(url)["queued"] == 0
            sizes.append(rss_mib())
        assert sizes[2] - sizes[1] < 64, sizes


def rss_mib() -> float:
    """The process's resident memory now (not its all-time peak, which can never go down), after a collection."""
    import gc

    import psutil

    gc.collect()
    return float(psutil.Process().memory_info().rss) / (1024 * 1024)


def test_a_client_that_gives_up_on_a_whole_answer_frees_the_engine(tiny_engine: Any) -> None:
    backend = Paced(tiny_engine, delay=0.01)  # 2000 tokens would take 20 s
    backend.gate.set()
    with running_server(create_app(backend, model_name="tiny")) as url:
        with pytest.raises(httpx.ReadTimeout):
            post(url, request(2000), timeout=0.5)
        started = time.monotonic()
        assert post(url, request(3), timeout=10).status_code == 200
        assert time.monotonic() - started < 5
        first = backend.streams[0]
        assert first.stats.stop_reason == "cancelled" and first.stats.new_tokens < 1000
