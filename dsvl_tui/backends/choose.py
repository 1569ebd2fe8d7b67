"""The backend every front end answers with.

``load_backend`` is the one way the app, the REPL and ``ask`` get the model
they answer with. ``stats_line`` (from ``dsvl_tui.core.stats``) is re-exported
for the line-based front ends. Answers are run on the backend by
``dsvl_tui.core.turn`` (every front end's one runner).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dsvl_tui.core.options import resolvable_model
from dsvl_tui.core.stats import stats_line
from engine.types import ChatBackend

if TYPE_CHECKING:
    from dsvl_tui.core.options import Options

__all__ = ["Loader", "load_backend", "stats_line"]

# engine.load's signature: (model, *, device, dtype, revision, progress, compile[, quantize, max_batch:
# passed when set])
Loader = Callable[..., ChatBackend]


def loading_line(options: Options, model: str | None = None) -> str:
    """What a front end says it is starting: loading a local model, or answering through a server."""
    if options.endpoint:
        from dsvl_tui.backends.remote import public_url
        from dsvl_tui.web.client import is_web

        return "using the model server" if is_web() else f"using the model server at {public_url(options.endpoint)}"
    return f"loading {model or options.model}"


def load_backend(options: Options, model: str | None = None, progress: Callable[[Any], None] | None = None, *,
                 loader: Loader | None = None) -> ChatBackend:
    """The backend that answers for ``model`` (default: ``options.model``), loaded now.

    The one loader of the app, the REPL, ``ask`` and ``serve``: it chooses
    between a local engine (``engine.load``) and a client of a remote one
    (``options.endpoint``). ``progress`` gets the
    engine's ``LoadProgress`` events; ``loader`` stands in for ``engine.load``
    (tests). Raises whatever the load raises (``engine.EngineError`` for the
    expected failures); each front end words it as it needs.

    With ``options.endpoint`` the backend is a ``remote.RemoteBackend``: it
    asks the server for its model now (within ``remote_probe.PROBE_TIMEOUT``),
    and should the server not answer, it is returned all the same, not
    ``known``, with the reason in ``problem``: the front ends say "not
    connected" and try again (``remote_probe.watch``); the next message tries
    too. Under ``dsvl-chat web`` the server is the launcher's own, on a port
    of this run only: ``internal``, so its address is neither shown nor stored.
    """
    if options.endpoint:
        from dsvl_tui.backends.remote import RemoteBackend, RemoteError
        from dsvl_tui.backends.remote_probe import PROBE_TIMEOUT
        from dsvl_tui.web.client import is_web

        remote = RemoteBackend(options.endpoint, api_key=options.api_key, model=model, internal=is_web())
        try:
            remote.refresh(timeout=PROBE_TIMEOUT)
        except RemoteError:
            pass  # remote.problem says why; the front end tries again
        return remote
    if loader is None:
        loader = import_engine(progress)
    quantize: dict[str, Any] = {"quantize": options.quantize} if options.quantize != "none" else {}
    if options.max_batch is not None:  # else the engine's default for its device (engine.default_max_batch)
        quantize["max_batch"] = options.max_batch
    return loader(resolvable_model(model or options.model), device=options.device, dtype=options.dtype,
                  revision=options.revision,
                  progress=progress, compile=options.compile, **quantize)


# What engine.load imports on first use, slowest first: seconds on a cold start with nothing else to
# show, so each gets a progress event ("importing torch") before it.
ENGINE_IMPORTS = (("torch", "torch"), ("transformers", "transformers"), ("timm", "timm"),
                  ("engine.engine", "the model code"))


def import_engine(progress: Callable[[Any], None] | None = None) -> Loader:
    """``engine.load``, with a ``LoadProgress("import", ...)`` to ``progress`` before each slow import
    (none for what is imported already)."""
    import importlib
    import sys

    from engine.errors import checked_imports
    from engine.types import LoadProgress

    for module, what in ENGINE_IMPORTS:
        if module not in sys.modules:
            if progress is not None:
                progress(LoadProgress("import", 0, None, f"importing {what}"))
            with checked_imports():  # torch and torchvision of different builds: say so, and the fix
                importlib.import_module(module)
    import engine

    return engine.load
