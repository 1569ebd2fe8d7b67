"""The one way to do each thing across the front ends: the loader, the error line, the stats line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dsvl_tui.backends.choose import load_backend
from dsvl_tui.core.options import Options
from dsvl_tui.core.stats import stats_line
from dsvl_tui.core.text import error_line
from engine.errors import CheckpointError
from engine.types import GenerationStats

# --- error_line -------------------------------------------------------------------------------


def test_an_error_line_is_one_line_cut_to_the_limit() -> None:
    assert error_line("  disk\nfull \t now ") == "disk full now"
    assert error_line("x" * 500) == "x" * 300
    assert error_line("a b c d", limit=3) == "a b"


def test_an_engine_error_is_its_own_message_whole_and_any_other_its_type_and_message_cut() -> None:
    long = "see " + "the folder " * 60
    assert error_line(CheckpointError(long)) == " ".join(long.split())  # written for the user: kept whole
    assert error_line(CheckpointError("")) == "CheckpointError"
    assert error_line(ValueError("bad\nvalue")) == "ValueError: bad value"
    assert error_line(KeyError()) == "KeyError"
    assert len(error_line(RuntimeError(long))) == 300 and error_line(RuntimeError(long)).startswith("RuntimeError: ")


# --- stats_line ---------------------------------------------------------------------------------

STATS = GenerationStats(prompt_tokens=40, new_tokens=42, time_to_first_token=0.414, tokens_per_second=31.04,
                        stop_reason="length", dropped_turns=2)


@pytest.mark.parametrize(("style", "expected"), [
    ("log", "42 tokens · 31.0 tok/s · first token 0.41 s · stopped at max_new_tokens"
            " · 2 oldest turns left out to fit the context window"),
    ("markdown", "42 tokens · 31.0 tok/s · first token 0.41 s · stopped at max_new_tokens"
                 " · 2 oldest turns left out to fit the context window"),
    ("pane", "42 tokens · 31.0 tok/s · first token 0.41s · 2 oldest turns left out to fit the context window"),
])
def test_one_stats_line_worded_for_each_audience(style: Any, expected: str) -> None:
    assert stats_line(STATS, style) == expected


def test_how_an_answer_ended_is_said_where_nothing_else_says_it() -> None:
    stopped = GenerationStats(new_tokens=1, stop_reason="cancelled")
    assert stats_line(stopped) == "1 token · stopped"  # the REPL and ask: the line is all there is
    assert stats_line(stopped, "markdown") == "1 token"  # the export writes "stopped" itself
    assert stats_line(stopped, "pane") == "1 token"  # so does the marker
    assert stats_line(GenerationStats(stop_reason="error"), "pane") == ""  # no tokens: the marker shows the error
    assert stats_line(GenerationStats(stop_reason="error")) == "0 tokens · failed"
    assert stats_line(None) == stats_line(None, "pane") == ""


# --- load_backend -------------------------------------------------------------------------------


def test_every_front_end_loads_through_one_function_with_the_options(tiny_siglip: Path) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def loader(model: str, **kwargs: Any) -> Any:
        calls.append((model, kwargs))
        return "backend"

    options = Options(model="chosen", device="cpu", dtype="float32", revision="main", compile=True)
    assert load_backend(options, loader=loader) == "backend"
    assert load_backend(options, "other", print, loader=loader) == "backend"
    assert calls == [
        ("chosen", {"device": "cpu", "dtype": "float32", "revision": "main", "progress": None, "compile": True}),
        ("other", {"device": "cpu", "dtype": "float32", "revision": "main", "progress": print, "compile": True}),
    ]
    # Without a stand-in it is the engine's own load.
    events: list[Any] = []
    backend = load_backend(Options(model=str(tiny_siglip), device="cpu", dtype="float32"), progress=events.append)
    assert backend.info.model_id == str(tiny_siglip) and events[-1].stage == "ready"
