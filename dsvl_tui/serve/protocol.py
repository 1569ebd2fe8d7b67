"""uvicorn's HTTP/1.1 protocol with a deadline on each request's head (request line and headers).

uvicorn restarts its keep-alive timer on every byte received, so a client
that sends a header byte every few seconds holds its connection for ever,
and the app cannot help: it sees a request only once the head is whole.
(``app.read_body`` gives the body its own deadline.) Built on uvicorn's
h11 protocol, the one it uses when httptools is not installed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_SECONDS = 30.0  # from the connection (or the end of the last answer) to the whole head


def head_deadline(seconds: float = HEAD_SECONDS) -> type[H11Protocol]:
    """The protocol class to give uvicorn (``http=``): a head not whole within ``seconds`` closes the connection."""

    class HeadDeadline(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the head is whole (or the connection is done)
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is h11.IDLE:  # waiting for the next request's head
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(seconds, self._late)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _late(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeadDeadline


__all__ = ["HEAD_SECONDS", "head_deadline"]
