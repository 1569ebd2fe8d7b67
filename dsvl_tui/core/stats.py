"""The one stats line of an answer, in the style each front end shows it.

The REPL and ``ask`` write it to stderr (``"log"``), the app under each
answer (``"pane"``), the Markdown export under each answer (``"markdown"``):
the same parts and the same numbers, worded once here.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from numbers import Integral, Real
from typing import Any, Literal, get_args

from engine.types import GenerationStats, StopReason

StatsStyle = Literal["log", "pane", "markdown"]

_ENDINGS = {
    "eos": "",
    "stop_string": "",
    "length": "stopped at max_new_tokens",
    "cancelled": "stopped",
    "error": "failed",
}


# Counts above this are no real generation's (a server's "10**400 tokens"): they are dropped to 0.
MAX_COUNT = 2**31 - 1
_STOP_REASONS = get_args(StopReason)


def valid_stats(stats: GenerationStats | None) -> GenerationStats | None:
    """``stats`` as a transcript stores and reads them: what is recorded with an answer.

    Each count a non-negative ``int`` up to ``MAX_COUNT`` (else 0), each time a finite non-negative
    ``float`` (else None, or 0.0 where None is not allowed), ``stop_reason`` one of ``StopReason`` (else
    None), ``error`` text or None. A backend (a server, another engine) may report anything, and the
    transcript reader refuses a negative or non-integer count: cleaned here, the writer never sees one.
    """
    if stats is None:
        return None
    values: dict[str, Any] = {}
    for spec in fields(GenerationStats):
        value = getattr(stats, spec.name)
        kind = str(spec.type)
        if kind == "int":
            values[spec.name] = _count(value)
        elif kind in ("float", "float | None"):
            values[spec.name] = _seconds(value, None if "None" in kind else 0.0)
        elif spec.name == "stop_reason":
            values[spec.name] = value if isinstance(value, str) and value in _STOP_REASONS else None
        elif kind == "str | None":
            values[spec.name] = value if isinstance(value, str) else None
    return replace(stats, **values)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        return 0
    number = int(value)
    return number if 0 <= number <= MAX_COUNT else 0


def _seconds(value: Any, default: float | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, Real):
        return default
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return default
    return number if math.isfinite(number) and number >= 0 else default


def stats_line(stats: GenerationStats | None, style: StatsStyle = "log") -> str:
    """What one answer cost, as one line: ``"42 tokens · 31.0 tok/s · first token 0.41 s"``.

    The same parts and numbers for every front end; ``style`` is who reads it:

    - ``"log"`` (the REPL's and ``ask``'s stderr): plus how the answer ended
      when that is news (``stopped at max_new_tokens``, ``stopped``, ``failed``);
    - ``"markdown"`` (the exported transcript): plus ``stopped at
      max_new_tokens``; the export writes stopped and failed answers itself;
    - ``"pane"`` (the marker under an answer in the app): the seconds written
      compactly (``0.41s``) in the narrow pane, no ending (the marker says
      stopped or failed itself), and nothing at all for an answer with no tokens.

    Each style adds how many of the oldest turns were left out to fit.
    """
    if stats is None or (style == "pane" and not stats.new_tokens):
        return ""
    parts = [f"{stats.new_tokens} token{'s' if stats.new_tokens != 1 else ''}"]
    if stats.tokens_per_second:
        parts.append(f"{stats.tokens_per_second:.1f} tok/s")
    if stats.time_to_first_token is not None:
        unit = "s" if style == "pane" else " s"
        parts.append(f"first token {stats.time_to_first_token:.2f}{unit}")
    ending = _ENDINGS.get(stats.stop_reason or "", "")
    if ending and (style == "log" or style == "markdown" and stats.stop_reason == "length"):
        parts.append(ending)
    if stats.dropped_turns:
        turns = "turn" if stats.dropped_turns == 1 else "turns"
        parts.append(f"{stats.dropped_turns} oldest {turns} left out to fit the context window")
    return " · ".join(parts)
