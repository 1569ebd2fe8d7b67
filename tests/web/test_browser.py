"""``dsvl-chat web`` in a real browser: headless Chromium (Debian's ``chromium``) driven by playwright.

One ``dsvl-chat web`` runs for the module, as a subprocess on the tiny
checkpoint and free ports, and one browser. The terminal in the page draws on
a canvas, so what the page shows is read from the websocket frames the browser
receives (the app's screen updates, ANSI stripped). The tests run in order: the
last one stops the server with SIGINT.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no browser: {CHROMIUM} is missing (apt-get install chromium; .ci/run does)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
pytest.importorskip("textual_serve", reason="textual-serve is not installed (pip install -e '.[web]')")

import psutil  # noqa: E402
from playwright.sync_api import Browser, Download, Page, WebSocket, sync_playwright  # noqa: E402

from dsvl_tui.web.process_group import group_alive  # noqa: E402

pytestmark = pytest.mark.slow  # pyproject.toml: spawns Python processes; not in the inner loop

ROOT = Path(__file__).resolve().parents[2]
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]
ANSI = re.compile(r"\x1b\[[0-9;?<>=$]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][A-Z0-9]|\x1b[=>78]")
VIEWPORT = {"width": 1100, "height": 650}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = 60, what: str = "", page: Page | None = None) -> Any:
    """``check()`` once it is true; with ``page``, the browser's events (websocket frames) are taken in meanwhile.

    playwright's sync API hands events over only inside its own calls, so a plain sleep would see no frame arrive.
    """
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        if page is not None:
            page.wait_for_timeout(100)
        else:
            time.sleep(0.1)
    return result


@dataclass
class Web:
    process: subprocess.Popen[str]
    url: str  # the bare address
    signin: str  # what it printed: the address with its generated token, which sets the session cookie
    data: Path
    browser: Browser

    def journal(self) -> list[dict[str, Any]]:
        """The conversations the tabs autosaved (each tab writes its own file)."""
        found = []
        for path in sorted((self.data / "journal").glob("*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                pass  # being replaced right now
        return found

    def processes(self) -> list[psutil.Process]:
        """``dsvl-chat web`` and every process under it."""
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]


@dataclass
class Tab:
    """A browser tab on the app, and the text of every screen update it received."""

    page: Page
    frames: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    def text(self, since: int = 0) -> str:
        return ANSI.sub("", "".join(self.frames[since:]))

    def type_line(self, line: str) -> None:
        box = self.page.locator("#terminal").bounding_box()
        assert box is not None
        self.page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] - 60)  # the prompt box
        self.page.keyboard.type(line)
        self.page.keyboard.press("Enter")


def open_tab(web: Web) -> Tab:
    page = web.browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
    tab = Tab(page)
    origin = web.url.rstrip("/")

    def route(route: Any) -> None:
        if route.request.url.startswith(origin + "/"):
            route.continue_()
        else:
            tab.outside.append(route.request.url)
            route.abort()

    def on_socket(socket: WebSocket) -> None:
        socket.on("framereceived", lambda frame: tab.frames.append(
            frame if isinstance(frame, str) else frame.decode("utf-8", "replace")))

    page.route("**/*", route)
    page.on("websocket", on_socket)
    page.goto(web.signin)  # each new_page is a new browser context: it signs in, and lands on the bare address
    assert page.url == web.url
    wait_for(lambda: page.evaluate("document.body.classList.contains('-first-byte')"), what="the app's first screen")
    wait_for(lambda: "ready" in tab.text(), what="the model server's 'ready' in the status bar", page=page)
    return tab


@pytest.fixture(scope="module")
def web(tiny_siglip: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    home = tmp_path_factory.mktemp("web")
    data = home / "data"
    env = {**os.environ, "DSVL_DATA_DIR": str(data), "DSVL_CONFIG_DIR": str(home / "config"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT),
           # the model server's settings: the tabs' apps (--endpoint) would refuse them, so they must not get them
           "DSVL_DEVICE": "cpu", "DSVL_DTYPE": "float32", "DSVL_QUANTIZE": "none"}
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dsvl_tui.cli", "--temperature", "0", "--max-new-tokens", "160", "web",
         "--model", str(tiny_siglip), "--port", str(port)],
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


def answers(web: Web) -> list[str]:
    return [message["text"] for conversation in web.journal() for message in conversation["messages"]
            if message["role"] == "assistant" and message["text"].strip() and message["stats"]]  # finished ones


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]{4,}", text)


def test_the_page_shows_the_app_and_a_question_gets_its_answer_streamed(web: Web) -> None:
    tab = open_tab(web)
    screen = tab.text()
    assert "new chat" in screen and "Enter send" in screen and "^p palette" in screen  # tabs, prompt, footer
    assert f"http://127.0.0.1:{web.url.rsplit(':', 1)[1]}" not in screen  # the web server's address is not the model's
    before = len(tab.frames)
    tab.type_line("Describe the weather.")
    answer = wait_for(lambda: answers(web), what="the answer in the autosaved conversation",
                      page=tab.page)[0]
    shown = wait_for(lambda: [word for word in words(answer) if word in tab.text(before)],
                     what="the answer's words on the page", page=tab.page)
    assert shown and "Describe the weather." in tab.text(before)
    updates = [frame for frame in tab.frames[before:] if any(word in ANSI.sub("", frame) for word in words(answer))]
    assert len(updates) >= 2, "the answer came in one piece, not streamed"
    assert tab.outside == [], "the page asked for something outside the server"
    tab.page.close()


def test_typing_before_any_click_reaches_the_app_and_the_keys_shown_reach_it_too(web: Web) -> None:
    """Issue 26, item 7: the page focuses the terminal on load; the status bar names the model, not the internal
    model server's address; the footer offers keys a browser lets through (Alt+N, Alt+W), not Ctrl+N/W/Q."""
    tab = open_tab(web)
    screen = tab.text()
    assert not re.search(r"http://127\.0\.0\.1:\d+", screen), "the model server's address is shown"
    assert "^n" not in screen and "^w" not in screen and "^q" not in screen
    assert "alt+n" in screen.lower() or "\u2325n" in screen.lower()
    before = len(tab.frames)
    tab.page.keyboard.type("typed before a click")  # no click anywhere
    wait_for(lambda: "typed before a click" in tab.text(before), what="the typed text in the input", page=tab.page)
    tab.page.keyboard.press("Alt+n")
    wait_for(lambda: "2 new chat" in tab.text(before), what="a second tab from Alt+N", page=tab.page)
    tab.page.close()


def test_two_tabs_chat_at_once_and_only_the_model_server_loads_torch(web: Web) -> None:
    first, second = open_tab(web), open_tab(web)
    done = len(answers(web))
    first.type_line("Name a colour.")
    second.type_line("Name a number.")
    wait_for(lambda: len(answers(web)) == done + 2, what="both tabs' answers", page=second.page)
    conversations = {conversation["title"] for conversation in web.journal()}
    assert {"Name a colour.", "Name a number."} <= conversations  # each tab its own conversation

    processes = web.processes()
    torch = [p for p in processes if "libtorch" in Path(f"/proc/{p.pid}/maps").read_text()]
    assert [p.cmdline()[3] for p in torch] == ["serve"], [p.cmdline() for p in processes]
    apps = [p for p in processes if p not in torch and p.pid != web.process.pid]
    assert len(apps) == 2, [p.cmdline() for p in processes]  # one app process per open browser tab
    key = psutil.Process(torch[0].pid).environ()["DSVL_SERVE_API_KEY"]
    token = web.signin.rsplit("=", 1)[1]
    for app in apps:
        assert app.environ()["DSVL_API_KEY"] == key and app.environ()["DSVL_WEB"] == "1"
        assert not any(key in arg or token in arg for arg in app.cmdline())  # no secret on a command line
        assert token not in "".join(app.environ().values())  # nor the browsers' token in a tab's environment
    first.page.close()
    wait_for(lambda: len(web.processes()) == 3, timeout=20, what="the closed tab's app to end")
    second.page.close()


def test_a_picture_picked_in_the_browser_is_attached_and_export_downloads(web: Web, tmp_path: Path) -> None:
    from PIL import Image

    tab = open_tab(web)
    picture = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(picture)
    before = len(tab.frames)
    with tab.page.context.expect_page() as opened:  # /upload opens the upload page in a new browser tab
        tab.type_line("/upload")
    upload = opened.value
    upload.wait_for_load_state()
    assert upload.url.startswith(f"{web.url}upload/")
    upload.set_input_files("#files", str(picture))
    upload.click("button[type=submit]")
    upload.wait_for_load_state()
    assert "Sent to your chat tab" in upload.inner_text("main")
    upload.close()
    wait_for(lambda: "attached red.png" in tab.text(before), page=tab.page, what="the picture attached in the tab")

    tab.type_line("What is in the picture?")
    asked = wait_for(lambda: [c for c in web.journal() if c["title"] == "What is in the picture?"
                              and len(c["messages"]) == 2 and c["messages"][1]["stats"]], page=tab.page,
                     what="the answer about the picture")
    assert len(asked[0]["messages"][0]["images"]) == 1

    downloads: list[Download] = []
    tab.page.on("download", lambda download: downloads.append(download))  # window.open's download: the opener's
    exported = tmp_path / "chat.md"
    tab.type_line(f"/export {exported}")
    download = wait_for(lambda: downloads, page=tab.page, what="the browser's download")[0]
    assert download.suggested_filename == "chat.md"
    received = Path(download.path()).read_text(encoding="utf-8")
    assert received == exported.read_text(encoding="utf-8") and "What is in the picture?" in received
    assert tab.outside == []
    tab.page.close()


def test_ctrl_c_stops_everything_it_started(web: Web) -> None:
    tab = open_tab(web)
    processes = web.processes()
    assert len(processes) == 3
    group = os.getpgid(processes[1].pid)
    assert group != os.getpgid(web.process.pid)  # the children have their own group, the terminal's Ctrl-C
    runtime = Path(processes[-1].environ()["DSVL_WEB_UPLOADS"]).parent
    assert runtime.is_dir() and runtime.stat().st_mode & 0o077 == 0
    web.process.send_signal(signal.SIGINT)
    assert web.process.wait(30) == 0
    assert not group_alive(group)
    for process in processes:
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE, process
    assert not runtime.exists()
    tab.page.close()
