"""A client that leaves cancels its request's work: one wrapper for every await that may outlast the client.

``unless_client_leaves(request, work)`` awaits ``work`` and, beside it, the client's disconnect; if the
client goes first, ``work`` is cancelled (its own cleanup runs: a queued request leaves the queue, an
answer's engine stops within one token) and the request ends with 499, nginx's "client closed request".
The idea is vLLM's ``with_cancellation`` (``vllm/entrypoints/utils.py``), applied to one await rather
than a whole handler: a handler here reads its own body under a size and time limit first, and
listening for the disconnect consumes the request's messages, so it may start only once the body is in.
A streamed answer needs none of this: Starlette's ``StreamingResponse`` listens for the disconnect itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from dsvl_tui.serve.requests import RequestError

T = TypeVar("T")


async def disconnected(request: Request) -> None:
    """Returns when the client has gone (call once the body has been read: it consumes the messages)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``await work``, cancelled if the client disconnects first (then ``RequestError`` 499).

    If both end together, the work's result (or error) wins: it is done and nothing is lost by using it."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():  # the client left, or this handler itself was cancelled
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise RequestError(499, "the client closed the connection", code="client_closed")
    return task.result()


__all__ = ["disconnected", "unless_client_leaves"]
