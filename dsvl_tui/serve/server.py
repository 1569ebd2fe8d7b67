"""Run the server: load the engine, build the app and serve it with uvicorn.

``is_loopback`` is light (no FastAPI, no engine) so the CLI can refuse an
exposed server without an API key before loading anything.
"""

from __future__ import annotations

import ipaddress
import secrets
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # this module stays light: the CLI asks is_loopback before anything loads
    from dsvl_tui.core.options import Options
    from dsvl_tui.serve.requests import Limits
    from engine.types import ChatBackend


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(backend: ChatBackend, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          model_name: str | None = None, limits: Limits | None = None, made_key: bool = False) -> None:
    """Serve ``backend`` until interrupted (blocks); ``made_key``: ``api_key`` was made for this run (printed)."""
    import uvicorn

    from dsvl_tui.serve.app import create_app

    app = create_app(backend, api_key=api_key, model_name=model_name, limits=limits)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {model_name or backend.info.model_id} at http://{shown}:{port}/v1"
          f"{' (API key required)' if api_key else ' (no API key: every account on this machine can use it)'}",
          file=sys.stderr)
    if made_key and api_key:
        print(f"API key for this run: {api_key}  (clients send 'Authorization: Bearer KEY'; dsvl-chat takes "
              "DSVL_API_KEY; set DSVL_SERVE_API_KEY to choose your own)", file=sys.stderr)
    from dsvl_tui.serve.protocol import head_deadline

    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5, http=head_deadline())


def run_serve(options: Options, *, host: str, port: int, api_key: str | None, limits: Limits,
              make_key: bool = True) -> int:
    """``dsvl-chat serve``: load the model (``backends.choose.load_backend``) and serve it; the exit code.

    Without ``api_key`` a random one is made (unless ``make_key`` is False): on a shared machine every
    account can reach loopback, so an open server lends the model, and the prompts it keeps for reuse
    (their prefill time tells), to all of them."""
    from dsvl_tui.backends.choose import load_backend
    from dsvl_tui.core.text import error_line
    from engine.errors import EngineError

    print(f"loading {options.model} ...", file=sys.stderr)
    try:
        backend = load_backend(options)
    except EngineError as exc:
        print(f"error: {error_line(str(exc))}", file=sys.stderr)
        return 4
    made = api_key is None and make_key
    if made:
        api_key = secrets.token_urlsafe(32)  # 256 bits
    try:
        serve(backend, host=host, port=port, api_key=api_key, limits=limits, made_key=made)
    except KeyboardInterrupt:
        return 130
    return 0


__all__ = ["is_loopback", "run_serve", "serve"]
