"""The one stats line of an answer, in the style each front end shows it.

The REPL and ``ask`` write it to stderr (``"log"``), the app under each
answer (``"pane"``), the Markdown export under each answer (``"markdown"``):
the same parts and the same numbers, worded once here.
"""

from __future__ import annotations

from typing import Literal

from engine.types import GenerationStats

StatsStyle = Literal["log", "pane", "markdown"]

_ENDINGS = {
    "eos": "",
    "stop_string": "",
    "length": "stopped at max_new_tokens",
    "cancelled": "stopped",
    "error": "failed",
}


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
