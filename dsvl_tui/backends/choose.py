"""The backend every front end answers with, and answers start to end.

``load_backend`` is the one way the app, the REPL and ``ask`` get the model
they answer with. ``stats_line`` (from ``dsvl_tui.core.stats``) is re-exported
for the line-based front ends.

``stream_answer`` (the REPL and ``ask``; the app posts its answers to the
screen with ``tui.workers.generate_answer``) sends a conversation to a
backend, hands each text chunk to a callback as it arrives and records the
answer in the conversation, whatever way it ends: complete, stopped by the
user, or failed part way. Input problems (a bad image, a turn too long for
the context window) raise ``engine.EngineError`` from the backend before
anything is generated, and nothing is recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dsvl_tui.core.conversation import ChatMessage, Conversation
from dsvl_tui.core.options import resolvable_model
from dsvl_tui.core.stats import stats_line
from engine.errors import GenerationError
from engine.types import LAYOUTS, ChatBackend

if TYPE_CHECKING:
    from dsvl_tui.core.options import Options

__all__ = ["Loader", "load_backend", "note_backend", "stats_line", "stream_answer"]

# engine.load's signature: (model, *, device, dtype, revision, progress, compile[, quantize, max_batch: passed when set])
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
    return loader(resolvable_model(model or options.model), device=options.device, dtype=options.dtype, revision=options.revision,
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


def note_backend(conversation: Conversation, backend: ChatBackend) -> None:
    """Record in ``conversation`` what answers it: the server (``RemoteBackend.endpoint``, no credentials; none
    for ``dsvl-chat web``'s internal one) and its model, or no endpoint for a local model, its quantization and
    its checkpoint layout. Called once the backend has accepted the request."""
    remote = getattr(backend, "remote", False) is True
    endpoint = getattr(backend, "endpoint", "")
    conversation.endpoint = endpoint if remote and isinstance(endpoint, str) else ""
    quantize = getattr(getattr(backend, "info", None), "quantize", "none")  # a stand-in backend may lack them
    conversation.quantize = quantize if isinstance(quantize, str) and not remote else "none"
    layout = getattr(getattr(backend, "info", None), "layout", "")  # a server's is not known
    conversation.layout = layout if isinstance(layout, str) and layout in LAYOUTS and not remote else ""
    if remote and backend.info.model_id:
        conversation.model = backend.info.model_id


def stream_answer(backend: ChatBackend, conversation: Conversation, *, cancel: threading.Event,
                  on_chunk: Callable[[str], None], on_note: Callable[[str], None] | None = None,
                  on_open: Callable[[], None] | None = None) -> ChatMessage:
    """Answer the conversation's last user message; returns the answer it appended.

    ``on_open`` is called once the backend has accepted the request (the REPL journals the question
    then: one the backend refused was never sent). ``on_note`` gets, when the stream has ended, each
    line the backend has about what it dropped or cut (a server's invalid fields, an answer past
    max_new_tokens: ``RemoteStream.notes``).
    """
    stream = backend.stream(conversation.engine_messages(), conversation.settings, system=conversation.system,
                            cancel=cancel, cache_key=conversation.id)
    note_backend(conversation, backend)
    if on_open is not None:
        on_open()
    parts: list[str] = []
    chunks = iter(stream)
    try:
        for chunk in chunks:
            parts.append(chunk)
            on_chunk(chunk)
    except GenerationError as exc:
        return conversation.add_answer("".join(parts), stream.stats, error=str(exc))
    except KeyboardInterrupt:
        cancel.set()
        _close(chunks)  # waits for the worker, so the stats are final
        conversation.add_answer("".join(parts), stream.stats, stopped=True)
        raise
    finally:
        _close(chunks)
        notes = getattr(stream, "notes", None)
        if on_note is not None and isinstance(notes, list):
            for note in notes:
                on_note(note)
    stats = stream.stats
    return conversation.add_answer("".join(parts), stats, stopped=stats.stop_reason == "cancelled")


def _close(chunks) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
