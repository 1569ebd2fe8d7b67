"""``dsvl-chat web``: start the model server once, then serve the app to browsers.

``run_web`` makes a private runtime folder (mode 0700, with ``uploads/``),
starts ``dsvl-chat serve`` on a random loopback port with a generated API key
in its environment (every local user can reach a loopback port: without the
key they get 401) in a new process group, waits until it answers ``/health``,
then serves ``WebServer`` in this process, which always requires a token: the
one given, else a generated one printed in the URL. Every browser tab's app
runs ``dsvl-chat`` with ``DSVL_ENDPOINT``/``DSVL_API_KEY`` (never on its
command line), ``DSVL_WEB=1``, ``DSVL_WEB_URL``, ``DSVL_WEB_UPLOADS`` and the
model server's limits (``DSVL_WEB_MAX_IMAGES``, ``DSVL_WEB_MAX_BODY_MIB``) in
its environment, in the same process group. No secret is ever on a child's
command line, and the web token is in no child's environment. On Ctrl-C, SIGTERM, or when the model
server dies, the whole group is sent SIGTERM, then SIGKILL if anything is left
after ``process_group.GRACE_SECONDS``, and the runtime folder is removed.

This process never imports torch: it is an aiohttp server and a supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import IO

from dsvl_tui.web.process_group import group_kwargs, stop_group
from dsvl_tui.web.secret import generate

LOAD_TIMEOUT = 3600.0  # seconds the model may take to load (a first download from the hub)
# The model server's settings: an app with --endpoint refuses the local engine's ones, so they are taken out.
ENGINE_ONLY = ("DSVL_DEVICE", "DSVL_DTYPE", "DSVL_COMPILE", "DSVL_QUANTIZE", "DSVL_MODEL", "DSVL_SERVE_API_KEY")
WEB_SECRETS = ("DSVL_WEB_TOKEN",)  # the browsers' secret: no child process needs it
# What the model server takes in one request: given to it explicitly, and to every tab, which counts its
# pictures against them before sending (web.client.ServerLimits), so a tab is not left with pictures it can never send.
MAX_IMAGES = 8
MAX_BODY_MIB = 32


@dataclass(frozen=True)
class WebOptions:
    """What ``dsvl-chat web`` was asked for; ``engine_args`` go to ``dsvl-chat serve``, ``app_args`` to every tab."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None  # None: a generated one, printed in the URL
    engine_args: list[str] = field(default_factory=list)
    app_args: list[str] = field(default_factory=list)


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def public_url(host: str, port: int) -> str:
    """The base URL a browser on this machine (or, for a wildcard address, another one) opens."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}" if port == 80 else f"http://{shown}:{port}"


def _python() -> list[str]:
    return [sys.executable, "-m", "dsvl_tui.cli"]


@contextlib.contextmanager
def runtime_folder() -> Iterator[Path]:
    """A private folder (0700) with ``uploads/`` (0700), removed afterwards."""
    runtime = Path(tempfile.mkdtemp(prefix="dsvl-web-"))
    try:
        (runtime / "uploads").mkdir(mode=0o700)
        yield runtime
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


class OutputTail:
    """The last lines a child process wrote, kept in memory for the error shown if it fails.

    The model server logs a line per request for as long as it runs; a file
    would grow without end, this keeps at most ``lines`` lines of at most
    ``width`` bytes each.
    """

    def __init__(self, stream: IO[bytes], *, lines: int = 200, width: int = 2000) -> None:
        self._lines: deque[str] = deque(maxlen=lines)
        self._thread = threading.Thread(target=self._read, args=(stream, width), name="serve-output", daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes], width: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in iter(lambda: stream.readline(width), b""):
                self._lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def text(self, lines: int = 15) -> str:
        self._thread.join(timeout=2)  # a process that exited: take in what it wrote last
        return "\n".join(list(self._lines)[-lines:])


def wait_until_ready(process: subprocess.Popen[bytes], url: str, key: str) -> bool:
    """Poll ``url``/health until the model server answers (True) or exits (False)."""
    import httpx

    deadline = time.monotonic() + LOAD_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/health", timeout=2, headers={"Authorization": f"Bearer {key}"}).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_web(options: WebOptions) -> int:
    """``dsvl-chat web``; the exit code (0 after Ctrl-C once serving, 4 when the model could not be loaded)."""
    from dsvl_tui.serve.server import is_loopback

    missing = [name for name in ("textual_serve", "aiohttp", "fastapi", "uvicorn") if find_spec(name) is None]
    if missing:
        print(f"error: dsvl-chat web needs {', '.join(missing)}: pip install 'dsvl-chat[web]'", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupted)  # while the model loads, SIGTERM cleans up as Ctrl-C does
    key = secrets.token_urlsafe(32)
    token = options.token or generate()
    model_port = free_port()
    endpoint = f"http://127.0.0.1:{model_port}"
    with runtime_folder() as runtime:
        server_env = {name: value for name, value in os.environ.items() if name not in WEB_SECRETS}
        server_env["DSVL_SERVE_API_KEY"] = key
        argv = [*_python(), "serve", "--host", "127.0.0.1", "--port", str(model_port),
                f"--max-images={MAX_IMAGES}", f"--max-body-mib={MAX_BODY_MIB}", *options.engine_args]
        model = subprocess.Popen(argv, env=server_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, **group_kwargs(0))
        assert model.stdout is not None
        log = OutputTail(model.stdout)
        group = model.pid
        try:
            print("loading the model ...", file=sys.stderr, flush=True)
            if not wait_until_ready(model, endpoint, key):
                print(log.text(), file=sys.stderr)
                print("error: the model server did not start (its output is above)", file=sys.stderr)
                return 4
            url = public_url(options.host, options.port)
            app_env = {"DSVL_ENDPOINT": endpoint, "DSVL_API_KEY": key, "DSVL_WEB": "1", "DSVL_WEB_URL": url,
                       "DSVL_WEB_UPLOADS": str(runtime / "uploads"), "DSVL_WEB_MAX_IMAGES": str(MAX_IMAGES),
                       "DSVL_WEB_MAX_BODY_MIB": str(MAX_BODY_MIB)}
            from dsvl_tui.web.server import WebServer

            server = WebServer(host=options.host, port=options.port, public_url=url,
                               app_argv=[*_python(), *options.app_args], app_env=app_env,
                               app_unset=ENGINE_ONLY + WEB_SECRETS, uploads=runtime / "uploads", token=token,
                               group=group, loopback=is_loopback(options.host))
            return asyncio.run(_serve(server, url, generated=options.token is None, model=model))
        except KeyboardInterrupt:
            return 130
        finally:
            # a second Ctrl-C (or a SIGTERM) must not cut the clean-up short
            previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                stop_group(group, model)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)


async def _serve(server: object, url: str, *, generated: bool, model: subprocess.Popen[bytes]) -> int:
    from aiohttp import web

    from dsvl_tui.web.server import WebServer

    assert isinstance(server, WebServer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(await server._make_app(), handle_signals=False, shutdown_timeout=2, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, server.host, server.port)
        try:
            await site.start()
        except OSError as exc:
            print(f"error: cannot listen on {server.host}:{server.port} ({exc.strerror or exc}): "
                  "give another --port", file=sys.stderr)
            return 1
        # A generated token is shown in the URL (the only way to learn it); a given one is not repeated into
        # logs: its owner knows it, and the page asks for it.
        shown = f"{url}/?token={server.token}" if generated else f"{url}/"
        how = "" if generated else " and give your token (or add ?token=YOUR-TOKEN to the address)"
        print(f"dsvl-chat is ready: open {shown} in a browser{how} (Ctrl-C stops it)", file=sys.stderr, flush=True)
        print(shown, flush=True)
        code = 0
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            if model.poll() is not None:
                print("error: the model server stopped; stopping", file=sys.stderr)
                code = 4
                break
        return code
    finally:
        if server.group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.group, signal.SIGTERM)  # the tabs end at once, so their websockets close
        await runner.cleanup()


__all__ = ["MAX_BODY_MIB", "MAX_IMAGES", "WEB_SECRETS", "WebOptions", "free_port", "public_url", "run_web"]
