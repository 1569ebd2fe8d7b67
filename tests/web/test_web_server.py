"""The web server's own routes through aiohttp's test client: uploads, the token, the Host and Origin checks.

No app process and no browser: ``WebServer`` is built with an app command that
is never run (no websocket is opened).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("textual_serve", reason="textual-serve is not installed (pip install -e '.[web]')")

from aiohttp import FormData  # noqa: E402 - after the skip
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from dsvl_tui.web.server import COOKIE, DONE, MAX_FILES, UPLOAD_LIMIT, WebServer, content_disposition, safe_name  # noqa: E402

pytestmark = pytest.mark.slow  # pyproject.toml: spawns Python processes; not in the inner loop

PORT = 8080  # the port the server believes it has; the test client's Host header is set to match it
HOST = f"127.0.0.1:{PORT}"

Check = Callable[[TestClient[Any, Any], Path], Awaitable[None]]


def run(check: Check, uploads: Path, *, token: str = "the-tests-token", loopback: bool = True,
        signed_in: bool = True) -> None:
    """``check`` with a client of a ``WebServer`` on ``token``; ``signed_in``: the client has opened ``/?token=``."""
    async def main() -> None:
        server = WebServer(host="127.0.0.1", port=PORT, public_url=f"http://{HOST}",
                           app_argv=[sys.executable, "-c", ""], app_env={}, uploads=uploads, token=token,
                           loopback=loopback)
        client = TestClient(TestServer(await server._make_app()), headers={"Host": HOST})
        await client.start_server()
        try:
            if signed_in:
                assert (await client.get(f"/?token={token}")).status == 200  # redirected to /, with the cookie
            await check(client, uploads)
        finally:
            await client.close()

    asyncio.run(main())


def new_token(uploads: Path) -> str:
    token = secrets.token_urlsafe(24)
    (uploads / token).mkdir(mode=0o700)
    return token


def files(*items: tuple[str, bytes]) -> FormData:
    form = FormData()
    for name, data in items:
        form.add_field("file", data, filename=name, content_type="application/octet-stream")
    return form


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir(mode=0o700)
    return folder


def test_an_upload_lands_in_the_tokens_folder_then_done_and_the_token_is_spent(uploads: Path) -> None:
    async def check(client: TestClient[Any, Any], uploads: Path) -> None:
        token = new_token(uploads)
        page = await client.get(f"/upload/{token}")
        assert page.status == 200 and "32 MiB" in await page.text() and 'type="file"' in await page.text()
        sent = await client.post(f"/upload/{token}", data=files(("cat.png", b"\x89PNG one"), ("b.jpg", b"two")))
        assert sent.status == 200 and "Sent to your chat tab" in await sent.text()
        folder = uploads / token
        assert sorted(os.listdir(folder)) == [DONE, "1-cat.png", "2-b.jpg"]  # no temporary file left
        assert (folder / "1-cat.png").read_bytes() == b"\x89PNG one"
        assert (folder / DONE).read_text() == "1-cat.png\n2-b.jpg\n"
        again = await client.post(f"/upload/{token}", data=files(("c.png", b"three")))
        assert again.status == 410 and "used already" in await again.text()
        assert (await client.get(f"/upload/{token}")).status == 410
        assert sorted(os.listdir(folder)) == [DONE, "1-cat.png", "2-b.jpg"]

    run(check, uploads)


def test_tokens_that_are_malformed_unknown_or_not_a_real_folder_are_refused(uploads: Path, tmp_path: Path) -> None:
    async def check(client: TestClient[Any, Any], uploads: Path) -> None:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        linked = secrets.token_urlsafe(24)
        (uploads / linked).symlink_to(elsewhere)
        plain_file = secrets.token_urlsafe(24)
        (uploads / plain_file).write_bytes(b"")
        for token in ("short", "a" * 65, "x" * 30 + "%2E%2E", secrets.token_urlsafe(24), linked, plain_file):
            for method in ("get", "post"):
                answer = await getattr(client, method)(f"/upload/{token}", data=files(("a.png", b"x")))
                assert answer.status == 404, (token, method)
        assert os.listdir(elsewhere) == []
        answer = await client.post("/upload/..%2F..%2Fetc", data=files(("a.png", b"x")))
        assert answer.status == 404

    run(check, uploads)


def test_names_that_try_to_leave_the_folder_are_stored_inside_it(uploads: Path) -> None:
    async def check(client: TestClient[Any, Any], uploads: Path) -> None:
        token = new_token(uploads)
        names = ("../../evil.png", "..\\..\\win.png", ".hidden", "a\u200fb\u00ad.png", "/etc/passwd", "",
                 "x" * 300 + ".png")
        body = b"".join(b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n\r\ndata\r\n"
                        % name.encode() for name in names) + b"--XyZ--\r\n"
        sent = await client.post(f"/upload/{token}", data=body,
                                 headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
        assert sent.status == 200, await sent.text()
        stored = sorted(os.listdir(uploads / token))
        assert stored == sorted([DONE, "1-evil.png", "2-win.png", "3-hidden", "4-ab.png", "5-passwd", "6-file",
                                 "7-" + "x" * 96 + ".png"])
        assert sorted(os.listdir(uploads)) == [token]
        other = new_token(uploads)
        raw = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a\x1b[31m.png"\r\n\r\nx\r\n--XyZ--\r\n'
        control = await client.post(f"/upload/{other}", data=raw,
                                    headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
        assert control.status == 400 and os.listdir(uploads / other) == []

    run(check, uploads)


def test_a_request_over_the_size_limit_is_refused_and_leaves_nothing(uploads: Path) -> None:
    async def check(client: TestClient[Any, Any], uploads: Path) -> None:
        token = new_token(uploads)
        big = b"\0" * (UPLOAD_LIMIT // 2 + 1)
        answer = await client.post(f"/upload/{token}", data=files(("a.png", big), ("b.png", big)))
        assert answer.status == 413 and "32 MiB" in await answer.text()
        assert os.listdir(uploads / token) == []  # nor the temporary files, nor .done: the token still works
        many = await client.post(f"/upload/{token}", data=files(*[(f"{n}.png", b"x") for n in range(MAX_FILES + 1)]))
        assert many.status == 413 and os.listdir(uploads / token) == []
        empty = await client.post(f"/upload/{token}", data={"note": "no file"})
        assert empty.status == 400
        assert (await client.post(f"/upload/{token}", data=files(("a.png", b"x")))).status == 200

    run(check, uploads)


def test_every_route_needs_the_cookie_the_tokens_url_sets(uploads: Path) -> None:
    secret = "s3cret-token-value"

    async def check(client: TestClient[Any, Any], uploads: Path) -> None:
        upload = new_token(uploads)
        for path in ("/", "/static/js/textual.js", f"/upload/{upload}", "/ws", "/download/abc", "/nowhere"):
            answer = await client.get(path)
            assert answer.status == 401 and "?token=" in await answer.text(), path
            assert 'type="password" name="token"' in await answer.text()  # the page asks for the token
        assert (await client.post(f"/upload/{upload}", data=files(("a.png", b"x")))).status == 401
        assert (await client.get("/?token=wrong")).status == 401
        signed = await client.get(f"/?token={secret}&fontsize=14", allow_redirects=False)
        assert signed.status == 302 and signed.headers["Location"] == "/?fontsize=14"
        cookie = signed.cookies[COOKIE]
        assert cookie.value != secret and cookie["httponly"] and cookie["samesite"] == "Strict"
        assert (await client.get("/")).status == 200  # the client keeps the cookie
        assert (await client.post(f"/upload/{upload}", data=files(("a.png", b"x")))).status == 200
        client.session.cookie_jar.clear()
        assert (await client.get("/")).status == 401

    run(check, uploads, token=secret, loopback=False, signed_in=False)


def test_wrong_tokens_are_answered_one_at_a_time_and_late(uploads: Path) -> None:
    """Other accounts of the machine cannot try a short token of the owner's at network speed."""
    from dsvl_tui.web.server import GUESS_SECONDS

    async def check(client: TestClient[Any, Any], uploads: Path) -> None:
        start = time.monotonic()
        answers = await asyncio.gather(*(client.get(f"/?token=guess-number-{n}") for n in range(4)))
        assert [answer.status for answer in answers] == [401] * 4
        assert time.monotonic() - start >= 4 * GUESS_SECONDS - 0.05  # one after the other, however many at once
        assert "That token is not the one." in await answers[0].text()
        assert (await client.get("/?token=the-tests-token")).status == 200  # the right one still works

    run(check, uploads, signed_in=False)


def test_there_is_no_server_without_a_token(uploads: Path) -> None:
    """A loopback port is open to every account of the machine: an open server would let any of them drive the app."""
    for token in (None, ""):
        with pytest.raises((TypeError, ValueError)):
            WebServer(host="127.0.0.1", port=PORT, public_url=f"http://{HOST}", app_argv=[sys.executable, "-c", ""],
                      app_env={}, uploads=uploads, token=token)  # type: ignore[arg-type]


def test_other_sites_and_other_host_names_are_refused(uploads: Path) -> None:
    async def check(client: TestClient[Any, Any], uploads: Path) -> None:
        token = new_token(uploads)
        rebound = await client.get("/", headers={"Host": f"attacker.example:{PORT}"})
        assert rebound.status == 421
        assert (await client.get("/", headers={"Host": f"localhost:{PORT}"})).status == 200
        forged = await client.post(f"/upload/{token}", data=files(("a.png", b"x")),
                                   headers={"Origin": "http://attacker.example"})
        assert forged.status == 403 and os.listdir(uploads / token) == []
        socket = await client.get("/ws", headers={"Origin": "http://attacker.example", "Connection": "Upgrade",
                                                  "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                                  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        assert socket.status == 403
        same = await client.post(f"/upload/{token}", data=files(("a.png", b"x")), headers={"Origin": f"http://{HOST}"})
        assert same.status == 200

    run(check, uploads)


def test_the_page_loads_nothing_from_elsewhere(uploads: Path) -> None:
    async def check(client: TestClient[Any, Any], uploads: Path) -> None:
        page = await client.get("/")
        text = await page.text()
        assert page.status == 200 and "fonts.googleapis" not in text and "https://" not in text
        assert f'data-session-websocket-url="ws://{HOST}/ws"' in text
        assert "connect-src 'self' ws://" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Referrer-Policy"] == "same-origin"  # no-referrer makes Chromium post "Origin: null"
        font = await client.get("/static/fonts/RobotoMono-VariableFont_wght.ttf")
        assert font.status == 200

    run(check, uploads)


def test_the_page_gives_the_terminal_the_keyboard_focus_on_load(uploads: Path) -> None:
    """Typing before the first click reaches the app (issue 26, item 7): the page focuses xterm.js's input
    once loaded (test_browser.py types without a click in a real browser)."""
    async def check(client: TestClient[Any, Any], uploads: Path) -> None:
        page = await client.get("/")
        text = await page.text()
        script = text.split("<script>")[-1]
        assert 'window.addEventListener("load", focusTerminal)' in script
        assert 'querySelector("#terminal .xterm-helper-textarea")' in script and "input.focus()" in script
        assert "'unsafe-inline'" in page.headers["Content-Security-Policy"].split("script-src")[1].split(";")[0]
        terminal = await (await client.get("/static/js/textual.js")).text()  # the input the script looks for
        assert "xterm-helper-textarea" in terminal and "window.onload" in terminal

    run(check, uploads)


def test_safe_name_and_content_disposition() -> None:
    assert safe_name("a/b/../c.png") == "c.png"
    assert safe_name("...") == "file"
    assert safe_name("\u202eevil\u202dgnp.exe") == "evilgnp.exe"  # bidi overrides are format characters: dropped
    assert content_disposition("attachment", 'chat "1".md') == \
        "attachment; filename=\"chat _1_.md\"; filename*=UTF-8''chat%20%221%22.md"
    assert content_disposition("attachment", "ünï.md").endswith("filename*=UTF-8''%C3%BCn%C3%AF.md")
