"""``/compare``: answer each message with a second model too (or the same one with other settings).

The front end that offers it has ``compare_host()`` (the ``CompareHost`` below): the REPL prints the two
answers one after the other, labelled; the app streams them side by side. Loading is the front end's,
off its screen thread (``Session.read_then``); what a second model needs is said before it loads
(``backends.compare.load_side``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from dsvl_tui.commands.builtin._shared import require_idle, shell_words
from dsvl_tui.commands.registry import CommandError, registry
from dsvl_tui.commands.session import Session

if TYPE_CHECKING:  # pragma: no cover
    from dsvl_tui.backends.compare import CompareRequest, CompareSide

USAGE = "/compare [MODEL | off] [--OPTION VALUE]..."


class CompareHost(Protocol):
    """What a front end that compares gives ``/compare``."""

    def compared_side(self) -> CompareSide | None:
        """The side the active conversation is compared with, or None."""

    def load_compared(self, request: CompareRequest) -> CompareSide:
        """Make the side for ``request`` (called where it may take minutes: ``read_then``'s ``read``); says what
        a second model needs before it loads; raises ``CommandError`` with one line."""

    def set_compared(self, side: CompareSide | None) -> None:
        """Compare the active conversation's next messages with ``side`` (None: stop comparing)."""


@registry.command("compare", "Answer each message with a second model too, side by side", USAGE)
def compare(session: Session, args: str) -> None:
    """Options: --endpoint URL, --quantize none|int8|int4, and settings for the compared side only
    (--temperature, --top-p, --top-k, --repetition-penalty, --max-new-tokens, --seed).
    MODEL is a hub id or a local folder, loaded here only if memory allows (what it needs and what
    is free is said first); the same model with other settings (`/compare --temperature 1.0`) answers
    on the one engine already loaded. `--endpoint URL` asks another server (not in dsvl-chat web,
    where the compared model is the same server with other settings). Each message then goes to both;
    both answers are kept in the transcript, and each side continues its own answers. `/compare`
    alone says what it compares with; `/compare off` stops."""
    from dsvl_tui.backends.compare import CompareError, parse_request

    host: CompareHost | None = getattr(session, "compare_host", lambda: None)()
    if host is None:
        raise CommandError("this front end cannot compare; `dsvl-chat ask --compare MODEL` answers with both")
    words = shell_words(args)
    side = host.compared_side()
    if not words:
        session.info(f"comparing with {side.label}" if side is not None else f"not comparing; usage: {USAGE}")
        return
    if words == ["off"]:
        host.set_compared(None)
        session.info(f"stopped comparing with {side.label}" if side is not None else "not comparing")
        return
    require_idle(session, "start comparing")
    try:
        request = parse_request(words)
    except CompareError as exc:
        raise CommandError(str(exc)) from None

    def load() -> CompareSide:
        try:
            return host.load_compared(request)
        except CompareError as exc:
            raise CommandError(str(exc)) from None

    def started(side: CompareSide) -> None:
        host.set_compared(side)
        session.info(f"comparing with {side.label}: each message now goes to both (/compare off stops)")

    session.read_then(load, started)
