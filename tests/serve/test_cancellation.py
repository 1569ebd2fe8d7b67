"""The serve handlers' two shared pieces, without a model: the engine-error table and the cancellation wrapper.

The handlers' behaviour end to end (a queued client that leaves, a whole answer given up, each error's
status) is in test_queue.py, test_api.py and test_hostile.py; these pin the pieces themselves.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dsvl_tui.serve.app import ENGINE_ERRORS, engine_refusal
from dsvl_tui.serve.disconnect import unless_client_leaves
from dsvl_tui.serve.requests import RequestError
from engine.errors import (
    CheckpointError,
    ContextOverflowError,
    EngineError,
    GenerationError,
    ImageError,
)


@pytest.mark.parametrize(("error", "code"), [
    (ContextOverflowError("too long"), "context_length_exceeded"),
    (ImageError("not a picture"), "invalid_image"),
    (GenerationError("bad settings"), "invalid_value"),
    (CheckpointError("odd"), "invalid_value"),
    (EngineError("plain"), "invalid_value"),
    (ValueError("bad value"), "invalid_value"),
])
def test_an_engine_refusal_is_a_400_with_openais_code_and_the_engines_words(error: Exception, code: str) -> None:
    refused = engine_refusal(error)
    assert refused is not None
    assert (refused.status, refused.code, refused.message) == (400, code, str(error))


@pytest.mark.parametrize("error", [RuntimeError("bug"), KeyError("x"), asyncio.CancelledError(), KeyboardInterrupt()])
def test_anything_else_is_not_the_requests_fault(error: BaseException) -> None:
    assert engine_refusal(error) is None  # the handler re-raises it: 500, or the cancellation goes on


def test_a_subclass_comes_before_its_base_in_the_table() -> None:
    """First match wins: a base class above its subclass would hide the subclass's own code."""
    def classes(kinds: Any) -> tuple[type, ...]:
        return kinds if isinstance(kinds, tuple) else (kinds,)

    for earlier, (kinds, _, _) in enumerate(ENGINE_ERRORS):
        for later_kinds, _, _ in ENGINE_ERRORS[earlier + 1:]:
            for base in classes(kinds):
                assert not any(issubclass(later, base) for later in classes(later_kinds)), (base, later_kinds)


class FakeRequest:
    """What ``disconnected`` reads: ``receive()``, which says the client left once ``gone`` is set."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


def test_work_that_ends_first_gives_its_result() -> None:
    async def main() -> Any:
        request = FakeRequest()

        async def work() -> str:
            return "answer"

        return await unless_client_leaves(request, work())  # type: ignore[arg-type]

    assert asyncio.run(main()) == "answer"


def test_an_error_of_the_work_is_its_own() -> None:
    async def main() -> None:
        async def work() -> None:
            raise RequestError(503, "busy")

        await unless_client_leaves(FakeRequest(), work())  # type: ignore[arg-type]

    with pytest.raises(RequestError) as caught:
        asyncio.run(main())
    assert caught.value.status == 503


def test_a_client_that_leaves_cancels_the_work_and_gets_499() -> None:
    cleaned: list[str] = []

    async def main() -> None:
        request = FakeRequest()
        started = asyncio.Event()

        async def work() -> None:
            started.set()
            try:
                await asyncio.Event().wait()  # for ever, unless cancelled
            finally:
                cleaned.append("cleaned")  # as a queued request leaves the queue

        async def leave() -> None:
            await started.wait()
            request.gone.set()

        leaving = asyncio.ensure_future(leave())
        try:
            await unless_client_leaves(request, work())  # type: ignore[arg-type]
        finally:
            await leaving

    with pytest.raises(RequestError) as caught:
        asyncio.run(main())
    assert (caught.value.status, caught.value.code) == (499, "client_closed")
    assert cleaned == ["cleaned"]  # the work's own cleanup ran before the 499
