"""The web server: textual-serve's aiohttp application, wrapped.

textual-serve's ``Server`` serves a page (``/``), a websocket (``/ws``) whose
every connection starts one app process (``AppService``), downloads
(``/download/{key}``) and its static files. It has no authentication, no
upload route, and its page loads web fonts from the internet. ``WebServer``
subclasses it and replaces ``_make_app``:

- ``/`` is our own page: the same terminal, its font served from textual-serve's
  own ``static/fonts`` and a Content-Security-Policy that lets the page talk to
  this server only.
- a middleware checks every request: the ``Host`` header (a loopback server
  answers only to loopback names, against DNS rebinding), the ``Origin`` of
  websockets and posts (another site cannot drive a tab), and the session
  cookie that ``/?token=TOKEN`` sets (compared in constant time). There is
  always a token (``WebServer`` refuses to be built without one): a loopback
  port is open to every account of the machine, and a tab acts as its owner.
  A request without the cookie gets 401 and a page that asks for the token;
  it starts nothing. Wrong tokens are answered one at a time, each after
  ``GUESS_SECONDS``.
- ``/ws`` starts ``TabProcess``: the app as an argument list (no shell) with
  the environment the launcher gives, in the launcher's process group.
- ``GET``/``POST /upload/{token}``: the upload page and its form, for a one-time
  token the app made (see ``receive_upload``).
- ``/download/{key}`` quotes the file name in ``Content-Disposition``.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import logging
import os
import re
import secrets
import stat
import tempfile
import unicodedata
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

from dsvl_tui.web.client import DONE  # the marker the tab's app waits for: one name on both sides
from dsvl_tui.web.pages import INDEX, PAGE, SIGN_IN, UPLOAD_FORM
from dsvl_tui.web.process_group import group_kwargs

log = logging.getLogger("dsvl-chat.web")

MiB = 2**20
UPLOAD_LIMIT = 32 * MiB  # bytes of one upload request, every file together
MAX_FILES = 16  # files in one upload request
MAX_TABS = 32  # app processes at once (browser tabs)
TOKEN = re.compile(r"[A-Za-z0-9_-]{20,64}")
COOKIE = "dsvl_web_session"
GUESS_SECONDS = 0.5  # a wrong token is answered this late, one at a time: at most 2 guesses a second in all
NAME_LIMIT = 100  # characters of a stored file's name (after the number)
_CHUNK = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def safe_name(name: str | None) -> str:
    """A file name safe to store: no folders, no leading dots, no control characters, at most ``NAME_LIMIT`` long."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = "".join(ch for ch in base if not unicodedata.category(ch).startswith("C"))
    base = base.strip().lstrip(".").strip()
    if len(base) > NAME_LIMIT:
        stem, dot, ext = base.rpartition(".")
        ext = ext[:16] if dot and stem else ""
        base = base[: NAME_LIMIT - len(ext) - 1].rstrip() + "." + ext if ext else base[:NAME_LIMIT]
    return base or "file"


def content_disposition(kind: str, name: str) -> str:
    """``Content-Disposition`` for a download of ``name``: an ASCII fallback and the UTF-8 name (RFC 6266)."""
    name = safe_name(name)
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in name)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


class TabProcess(AppService):
    """One browser tab's app: ``argv`` run without a shell, in process group ``group``, with ``env`` added
    to the server's environment and the variables named in ``unset`` taken out."""

    def __init__(self, argv: list[str], env: dict[str, str], unset: tuple[str, ...], group: int | None,
                 **kwargs: Any) -> None:
        super().__init__(" ".join(argv), **kwargs)
        self._argv = argv
        self._env = env
        self._unset = unset
        self._group = group

    def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
        environment = super()._build_environment(width=width, height=height)
        for name in self._unset:
            environment.pop(name, None)
        environment.update(self._env)
        return environment

    async def _open_app_process(self, width: int = 80, height: int = 24) -> asyncio.subprocess.Process:
        self._process = process = await asyncio.create_subprocess_exec(
            *self._argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self._build_environment(width=width, height=height),
            **group_kwargs(self._group))
        self._stdin = process.stdin
        return process


class WebServer(Server):
    """textual-serve's server with authentication, uploads and a self-contained page (module docstring)."""

    def __init__(self, *, host: str, port: int, public_url: str, app_argv: list[str], app_env: dict[str, str],
                 uploads: Path, token: str, app_unset: tuple[str, ...] = (), group: int | None = None,
                 loopback: bool = True) -> None:
        import textual_serve

        if not token:  # never open: another local account would drive the app as its owner
            raise ValueError("the web server needs a token")
        static = Path(textual_serve.__file__).resolve().parent / "static"
        super().__init__(" ".join(app_argv), host=host, port=port, title="dsvl-chat", public_url=public_url,
                         statics_path=static)
        self.app_argv = app_argv
        self.app_env = app_env
        self.app_unset = app_unset
        self.uploads = uploads
        self.token = token
        self.group = group
        self.loopback = loopback
        self.session = secrets.token_urlsafe(32)  # the cookie's value: never the token itself
        self.tabs = 0
        self._guessing = asyncio.Lock()
        self._receiving: set[str] = set()
        self._hosts = {f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]")}
        self._hosts.add(public_url.split("://", 1)[-1].rstrip("/"))
        if port == 80:
            self._hosts |= {"127.0.0.1", "localhost", "[::1]"}

    async def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=UPLOAD_LIMIT + MiB)
        app.add_routes([
            web.get("/", self.handle_index, name="index"),
            web.get("/ws", self.handle_websocket, name="websocket"),
            web.get("/download/{key}", self.handle_download, name="download"),
            web.get("/upload/{token}", self.handle_upload_page, name="upload"),
            web.post("/upload/{token}", self.handle_upload, name="upload_post"),
            web.static("/static", self.statics_path, name="static"),
        ])
        app.on_response_prepare.append(_security_headers)
        return app

    # --- checks on every request -------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.loopback and request.host not in self._hosts:
            return _page(421, "Wrong address", f"This server answers at {html.escape(self.public_url)} only.")
        origin = request.headers.get("Origin")
        if origin is not None and (request.method != "GET" or request.path == "/ws") \
                and origin not in (f"http://{request.host}", f"https://{request.host}"):
            return _page(403, "Refused", "A page of another site may not use this server.")
        given = request.query.get("token")
        right = given is not None and hmac.compare_digest(given.encode(), self.token.encode())
        if given is not None and not right:
            # one wrong guess at a time, each answered after GUESS_SECONDS: a short token chosen by its owner
            # cannot be tried at network speed by other accounts of the machine
            async with self._guessing:
                await asyncio.sleep(GUESS_SECONDS)
        if right:
            response = web.HTTPFound(request.rel_url.with_query(
                {key: value for key, value in request.query.items() if key != "token"}))
            response.set_cookie(COOKIE, self.session, httponly=True, samesite="Strict", path="/")
            raise response
        cookie = request.cookies.get(COOKIE, "")
        if hmac.compare_digest(cookie.encode(), self.session.encode()):
            return await handler(request)
        wrong = "<p>That token is not the one.</p>" if given is not None else ""
        return _page(401, "Not signed in", wrong + SIGN_IN, raw=True)

    # --- the app -----------------------------------------------------------------------------

    async def handle_index(self, request: web.Request) -> web.Response:
        font_size = min(max(to_int(request.query.get("fontsize", "16"), 16), 6), 48)
        scheme = "wss" if request.secure else "ws"
        page = INDEX.format(ws=html.escape(f"{scheme}://{request.host}/ws"), font_size=font_size)
        csp = (f"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
               f"img-src 'self' data: blob:; font-src 'self'; connect-src 'self' {scheme}://{request.host}; "
               "frame-ancestors 'none'; form-action 'self'")
        return web.Response(text=page, content_type="text/html", headers={"Content-Security-Policy": csp})

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        websocket = web.WebSocketResponse(heartbeat=15)
        if self.tabs >= MAX_TABS:
            await websocket.prepare(request)
            await websocket.close(message=f"at most {MAX_TABS} tabs at once: close one".encode())
            return websocket
        width = to_int(request.query.get("width", "80"), 80)
        height = to_int(request.query.get("height", "24"), 24)
        service: TabProcess | None = None
        self.tabs += 1
        try:
            await websocket.prepare(request)
            service = TabProcess(self.app_argv, self.app_env, self.app_unset, self.group,
                                 write_bytes=websocket.send_bytes, write_str=websocket.send_str,
                                 close=websocket.close, download_manager=self.download_manager)
            await service.start(width, height)
            await self._process_messages(websocket, service)
        except asyncio.CancelledError:
            await websocket.close()
        except Exception as error:  # noqa: BLE001 - one tab's failure is logged; the server goes on
            log.warning("a tab failed: %s: %s", type(error).__name__, error)
        finally:
            self.tabs -= 1
            if service is not None:
                await service.stop()
        return websocket

    async def handle_download(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        try:
            meta = await self.download_manager.get_download_metadata(key)
        except KeyError:
            raise web.HTTPNotFound(text="no such download: it was taken already or its tab is closed") from None
        response = web.StreamResponse()
        charset = f"; charset={meta.encoding}" if meta.encoding else ""
        response.headers["Content-Type"] = f"{meta.mime_type}{charset}"
        kind = "inline" if meta.open_method == "browser" else "attachment"
        response.headers["Content-Disposition"] = content_disposition(kind, meta.file_name)
        await response.prepare(request)
        async for chunk in self.download_manager.download(key):
            await response.write(chunk)
        await response.write_eof()
        return response

    # --- uploads -----------------------------------------------------------------------------

    def _upload_folder(self, token: str) -> tuple[Path | None, web.Response | None]:
        """The folder of ``token``, or the page that refuses it (404 unknown, 410 spent)."""
        if not TOKEN.fullmatch(token):
            return None, _page(404, "No such upload", "This upload link is not valid: use /upload in your chat tab.")
        folder = self.uploads / token
        try:
            info = os.lstat(folder)
        except OSError:
            return None, _page(404, "No such upload", "This upload link is unknown or expired: use /upload in your "
                                                      "chat tab for a new one.")
        if not stat.S_ISDIR(info.st_mode):
            return None, _page(404, "No such upload", "This upload link is not valid: use /upload in your chat tab.")
        if os.path.lexists(folder / DONE):
            return None, _page(410, "Already used", "This upload link was used already: use /upload in your chat "
                                                    "tab for a new one.")
        return folder, None

    async def handle_upload_page(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        _, refused = self._upload_folder(token)
        if refused is not None:
            return refused
        body = UPLOAD_FORM.format(action=html.escape(f"/upload/{token}"), limit=UPLOAD_LIMIT // MiB)
        return _page(200, "Send files to your chat tab", body, raw=True)

    async def handle_upload(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        folder, refused = self._upload_folder(token)
        if refused is not None or folder is None:
            return refused or _page(404, "No such upload", "")
        if request.content_length is not None and request.content_length > UPLOAD_LIMIT:
            return _too_large()
        if token in self._receiving:
            return _page(409, "Busy", "Files for this link are being received already.")
        self._receiving.add(token)
        try:
            return await receive_upload(request, folder)
        finally:
            self._receiving.discard(token)


class _TooLarge(Exception):
    pass


async def receive_upload(request: web.Request, folder: Path) -> web.Response:
    """Store the files of a multipart post in ``folder`` as ``N-NAME``, each atomically, then ``.done``."""
    if not request.content_type.startswith("multipart/"):
        return _page(400, "No file", "Send the files with the form of the upload page.")
    temps: list[tuple[str, str]] = []  # (temporary path, final name)
    total = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.filename is None:
                continue
            if len(temps) >= MAX_FILES:
                return _page(413, "Too many files", f"At most {MAX_FILES} files at once.")
            fd, temp = tempfile.mkstemp(dir=folder, prefix=".part-")
            temps.append((temp, f"{len(temps) + 1}-{safe_name(part.filename)}"))
            with os.fdopen(fd, "wb") as out:
                while chunk := await part.read_chunk(_CHUNK):
                    total += len(chunk)
                    if total > UPLOAD_LIMIT:
                        raise _TooLarge
                    out.write(chunk)
        if not temps:
            return _page(400, "No file", "Choose or drop a file first.")
        names = []
        for temp, name in temps:
            os.replace(temp, folder / name)
            names.append(name)
        temps = []
        fd, temp = tempfile.mkstemp(dir=folder, prefix=".part-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("".join(f"{name}\n" for name in names))
        os.replace(temp, folder / DONE)
    except _TooLarge:
        return _too_large()
    except (ValueError, AssertionError, HttpProcessingError) as exc:  # aiohttp's answers to a malformed body
        return _page(400, "Bad upload", f"The upload could not be read ({html.escape(str(exc)[:120])}).")
    finally:
        for temp, _ in temps:
            try:
                os.unlink(temp)
            except OSError:
                pass
    count = f"{len(names)} file{'s' if len(names) != 1 else ''}"
    return _page(200, "Sent", f"<p class=ok>Sent to your chat tab ({count}). You can close this tab.</p>", raw=True)


def _too_large() -> web.Response:
    return _page(413, "Too large", f"The files are too large: at most {UPLOAD_LIMIT // MiB} MiB in all.")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    # same-origin, not no-referrer: with no-referrer Chromium sends "Origin: null" on the upload form's own post
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")


def _page(status: int, title: str, body: str, *, raw: bool = False) -> web.Response:
    """A small self-contained HTML page (no outside resources, no script but the upload form's own)."""
    content = body if raw else f"<p>{body}</p>"
    text = PAGE.format(title=html.escape(title), body=content)
    csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; form-action 'self'; " \
          "frame-ancestors 'none'"
    return web.Response(status=status, text=text, content_type="text/html",
                        headers={"Content-Security-Policy": csp})


__all__ = ["GUESS_SECONDS", "MAX_FILES", "UPLOAD_LIMIT", "TabProcess", "WebServer", "content_disposition",
           "receive_upload", "safe_name"]
