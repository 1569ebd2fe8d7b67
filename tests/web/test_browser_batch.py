"""``dsvl-chat web --max-batch 3`` in a real browser: three tabs asking at once all stream at the same time.

Every browser tab is an app of its own answering through the launcher's one
model server, which decodes up to ``--max-batch`` answers together. The check
cannot pass if the answers took turns: the server's ``/health`` must count
three running while the journal holds text of all three answers (each tab
journals its answer so far every ``PARTIAL_SAVE_SECONDS``), before any of
them has ended. The checkpoint is a tiny one with 24 layers, so 3,000 tokens
take far longer than the three questions take to ask.

Helpers (the browser, the tabs, reading what a page shows) are
``test_browser``'s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from test_browser import BROWSER_ARGS, CHROMIUM, ROOT, Web, free_port, open_tab, sync_playwright, wait_for

pytestmark = pytest.mark.slow  # pyproject.toml: a server and a browser; not in the inner loop

PLACES = 3


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    from engine.testing.random_checkpoints import write_checkpoint

    home = tmp_path_factory.mktemp("web-batch")
    deep = write_checkpoint(home / "deep-vl-chat", lm_layers=24)
    data = home / "data"
    env = {**os.environ, "DSVL_DATA_DIR": str(data), "DSVL_CONFIG_DIR": str(home / "config"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT), "DSVL_DEVICE": "cpu", "DSVL_DTYPE": "float32", "DSVL_QUANTIZE": "none"}
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dsvl_tui.cli", "--temperature", "0", "--max-new-tokens", "3000", "web",
         "--model", str(deep), "--max-batch", str(PLACES), "--port", str(port)],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()  # the URL, once the model server answers
        assert re.fullmatch(rf"http://127\.0\.0\.1:{port}/\?token=[A-Za-z0-9_-]{{43}}", line), \
            (line, process.stderr.read() if process.poll() is not None else "")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            try:
                yield Web(process, f"http://127.0.0.1:{port}/", line, data, browser)
            finally:
                browser.close()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def health(web: Web) -> dict[str, Any]:
    """The internal model server's ``/health`` (no key needed); its port is on its command line."""
    [serve] = [p for p in web.processes() if p.cmdline()[3:4] == ["serve"]]
    arguments = serve.cmdline()
    port = arguments[arguments.index("--port") + 1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        return json.loads(response.read())


def partial_answers(web: Web) -> dict[str, str]:
    """The text so far of each tab's answer, by question (journaled as it streams)."""
    return {conversation["title"]: conversation["messages"][1]["text"] for conversation in web.journal()
            if len(conversation["messages"]) == 2 and conversation["messages"][1]["text"].strip()}


def test_three_tabs_asking_at_once_all_stream_at_the_same_time(web: Web) -> None:
    assert health(web)["max_batch"] == PLACES  # web passed --max-batch on to its model server
    tabs = [open_tab(web) for _ in range(PLACES)]
    questions = [f"Question number {n}." for n in range(1, PLACES + 1)]
    for tab, question in zip(tabs, questions, strict=True):
        tab.type_line(question)

    def all_streaming() -> bool:
        return health(web)["running"] == PLACES and set(partial_answers(web)) >= set(questions)

    wait_for(all_streaming, timeout=120, what="three answers streaming at once", page=tabs[-1].page)
    finished = [c for c in web.journal() if len(c["messages"]) == 2 and not c["messages"][1]["stopped"]]
    assert finished == [], "an answer ended before all three were streaming"
    for tab in tabs:  # Esc stops each tab's answer; what was written stays, marked stopped
        tab.page.keyboard.press("Escape")
    wait_for(lambda: health(web)["running"] == 0, timeout=60, what="the three answers stopped", page=tabs[-1].page)
    for tab in tabs:
        tab.page.close()
