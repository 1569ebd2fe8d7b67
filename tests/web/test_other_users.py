"""``dsvl-chat web`` against another account of the same machine (issue 20).

A loopback port is open to every local account, and each websocket starts an
app that acts as the owner. One real ``dsvl-chat web`` runs per way of giving
its secret (none: a generated one; ``DSVL_WEB_TOKEN``) on the tiny checkpoint;
an "attacker" process runs as uid 65534 (``setpriv``, so the tests need root)
with nothing but the standard library. It tries the page, the websocket, an
upload, a static file, a guessed token and the internal model server, and
reports every process's command line and environment it could read. None of
that may get in or start a tab; the owner, with the token, gets in.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("textual_serve", reason="textual-serve is not installed (pip install -e '.[web]')")

import psutil  # noqa: E402

from dsvl_tui.web.launcher import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534
SETPRIV = shutil.which("setpriv")

# Run as uid 65534: the standard library only (the project may sit in a folder that user cannot read).
ATTACKER = r'''
import json, os, socket, sys, urllib.request, urllib.error

web_port, model_port = int(sys.argv[1]), int(sys.argv[2])
host = f"127.0.0.1:{web_port}"


def raw(port, request):
    """The status line and headers the server answers to ``request`` (bytes), or the error."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.split(b"\r\n\r\n")[0].decode("latin-1")
    except OSError as exc:
        return f"error: {exc}"


def upgrade(path, extra=""):
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n").encode()


def get(path, extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n".encode()


post = (f"POST /upload/{'a' * 32} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 89\r\nConnection: close\r\n\r\n"
        '--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.pth"\r\n\r\nx\r\n--XyZ--\r\n').encode()
web = {
    "websocket": raw(web_port, upgrade("/ws?width=80&height=24")),
    "websocket with an Origin": raw(web_port, upgrade("/ws", f"Origin: http://{host}\r\n")),
    "websocket with a made-up cookie": raw(web_port, upgrade("/ws", "Cookie: dsvl_web_session=guess\r\n")),
    "websocket with a guessed token": raw(web_port, upgrade("/ws?token=0123456789abcdefghij")),
    "page": raw(web_port, get("/")),
    "page with a guessed token": raw(web_port, get("/?token=0123456789abcdefghij")),
    "static file": raw(web_port, get("/static/js/textual.js")),
    "upload": raw(web_port, post),
}
model = {}
for method, path, body in (("GET", "/v1/models", None), ("POST", "/v1/chat/completions", b"{}")):
    request = urllib.request.Request(f"http://127.0.0.1:{model_port}{path}", data=body, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            model[path] = answer.status
    except urllib.error.HTTPError as exc:
        model[path] = exc.code
    except OSError as exc:
        model[path] = str(exc)
readable = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    for name in ("cmdline", "environ"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as handle:
                readable[f"{pid}/{name}"] = handle.read().decode("utf-8", "replace")
        except OSError:
            pass
print(json.dumps({"uid": os.getuid(), "web": web, "model": model, "readable": readable}))
'''


def _attacker_python() -> str | None:
    """A Python that uid 65534 can run (the test's own may sit in root's home), or None."""
    if SETPRIV is None or os.geteuid() != 0:
        return None
    for candidate in ("/usr/bin/python3", sys.executable):
        try:
            done = subprocess.run([SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", candidate,
                                   "-I", "-c", "pass"], cwd="/", env={}, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return candidate
    return None


PYTHON = _attacker_python()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    PYTHON is None, reason="needs root, setpriv (util-linux) and a Python uid 65534 can run")]


@dataclass
class Web:
    process: subprocess.Popen[str]
    port: int
    line: str  # what it printed on stdout
    token: str
    generated: bool

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def model_port(self) -> int:
        [serve] = [p for p in self.children() if p.cmdline()[3:4] == ["serve"]]
        argv = serve.cmdline()
        return int(argv[argv.index("--port") + 1])


@pytest.fixture(scope="module", params=["generated", "DSVL_WEB_TOKEN"])
def web(request: pytest.FixtureRequest, tiny_siglip: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    home = tmp_path_factory.mktemp("web")
    env = {**os.environ, "DSVL_DATA_DIR": str(home / "data"), "DSVL_CONFIG_DIR": str(home / "config"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "DSVL_DEVICE": "cpu", "DSVL_DTYPE": "float32"}
    env.pop("DSVL_WEB_TOKEN", None)
    given = request.param != "generated"
    if given:
        env["DSVL_WEB_TOKEN"] = "the owner's own token, from the environment".replace(" ", "-")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "dsvl_tui.cli", "web", "--model", str(tiny_siglip),
                                "--port", str(port)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline().strip()  # the URL, once the model server answers
        assert line, process.stderr.read()
        found = re.fullmatch(rf"http://127\.0\.0\.1:{port}/\?token=([A-Za-z0-9_-]+)", line)
        token = env["DSVL_WEB_TOKEN"] if given else (found.group(1) if found else "")
        yield Web(process, port, line, token, not given)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def attack(web: Web) -> dict[str, object]:
    assert PYTHON is not None and SETPRIV is not None
    done = subprocess.run([SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", PYTHON, "-I", "-c",
                           ATTACKER, str(web.port), str(web.model_port())], cwd="/", env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    assert report["uid"] == NOBODY
    return report


def status(head: str) -> int:
    match = re.match(r"HTTP/1\.1 (\d{3})", head)
    assert match, head
    return int(match.group(1))


def test_the_url_holds_the_secret_only_when_it_was_generated(web: Web) -> None:
    if web.generated:
        assert web.line == f"http://127.0.0.1:{web.port}/?token={web.token}"
        assert len(base64.urlsafe_b64decode(web.token + "=" * (-len(web.token) % 4))) * 8 >= 128
    else:
        assert web.line == f"http://127.0.0.1:{web.port}/"  # the owner knows it: not repeated into a log
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{web.port}/", timeout=60)  # the bare address, without the cookie
    assert refused.value.code == 401 and "?token=" in refused.value.read().decode()


def test_another_user_gets_401_everywhere_and_starts_no_tab(web: Web) -> None:
    report = attack(web)
    web_answers = report["web"]
    assert isinstance(web_answers, dict)
    for what, head in web_answers.items():
        assert status(head) == 401, (what, head)  # no "101 Switching Protocols": no websocket
    assert report["model"] == {"/v1/models": 401, "/v1/chat/completions": 401}  # the internal server needs its key
    assert [p.cmdline()[3] for p in web.children()] == ["serve"]  # no tab's app was started

    key = psutil.Process(next(p.pid for p in web.children())).environ()["DSVL_SERVE_API_KEY"]
    readable = report["readable"]
    assert isinstance(readable, dict)
    ours = {str(web.process.pid), *(str(p.pid) for p in web.children())}
    assert {name.split("/")[0] for name in readable if name.endswith("/cmdline")} >= ours  # it did look
    assert not any(name.split("/")[0] in ours for name in readable if name.endswith("/environ"))
    leaked = [name for name, text in readable.items() if web.token in text or key in text]
    assert leaked == []  # neither the token nor the model server's key on any command line it can read


def test_the_owner_with_the_token_gets_a_tab(web: Web) -> None:
    """The same requests as the attacker's, with the secret: the test above would see a tab start."""
    def exchange(request: bytes) -> tuple[str, socket.socket]:
        sock = socket.create_connection(("127.0.0.1", web.port), timeout=60)
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
        return data.split(b"\r\n\r\n")[0].decode("latin-1"), sock

    host = f"127.0.0.1:{web.port}"
    head, sock = exchange(f"GET /?token={web.token} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    sock.close()
    assert status(head) == 302
    cookie = re.search(r"Set-Cookie: (dsvl_web_session=[^;]+)", head)
    assert cookie and web.token not in cookie.group(1)
    head, sock = exchange((f"GET /ws?width=80&height=24 HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
                           "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           f"Cookie: {cookie.group(1)}\r\n\r\n").encode())
    try:
        assert status(head) == 101
        deadline = time.monotonic() + 120
        while len(web.children()) < 2:
            assert time.monotonic() < deadline, "no tab's app started"
            time.sleep(0.1)
        [app] = [p for p in web.children() if p.cmdline()[3:4] != ["serve"]]
        environ = app.environ()
        assert "DSVL_WEB_TOKEN" not in environ and environ["DSVL_WEB_MAX_IMAGES"] == "8"
        assert not any(web.token in arg for arg in app.cmdline())
    finally:
        sock.close()
