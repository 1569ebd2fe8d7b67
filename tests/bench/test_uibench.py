"""Smoke tests of the UI benchmark (``dsvl_tui.bench.ui``) and ``dsvl-chat bench``.

Tiny sizes, no timing assertions: the results must be filled in and sane.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsvl_tui.bench import ui as uibench
from dsvl_tui.cli import app


def test_the_answer_is_realistic_markdown_in_token_sized_pieces() -> None:
    pieces = uibench.markdown_answer()
    assert len(pieces) == uibench.TOKENS and pieces == uibench.markdown_answer()
    text = "".join(pieces)
    assert uibench.split_tokens(text) == pieces
    assert 2.5 < len(text) / len(pieces) < 5
    for sign in ("\n## ", "\n- ", "\n   - ", "\n1. ", "| --- |", "**", "`", "](https://", "\n> ",
                 *(f"```{language}\n" for language in ("python", "rust", "bash", "json", "sql", "typescript"))):
        assert sign in text, sign


def _check_run(run: dict, tokens: int) -> None:
    assert run["reached"] == tokens and run["caught_up"]
    assert run["chars"] == len("".join(uibench.markdown_answer(tokens)))
    assert run["frames"] >= 1 and run["cpu_seconds"] > 0 and run["parsed_chars"] >= run["chars"]
    window = run["windows"][100]
    assert window["start"] <= 50 and window["end"] >= 150
    assert window["cpu_ms_per_token"] > 0 and window["cpu_ms_per_frame"] > 0 and window["parsed_chars_per_token"] > 0
    lags = run["lag_ms"]
    assert all(math.isfinite(value) and value >= 0 for value in lags.values())
    assert lags["median"] <= lags["p95"] <= lags["max"]


def test_our_stream() -> None:
    run = uibench.run_stream(uibench.markdown_answer(300), "ours", rate=None)
    _check_run(run, 300)
    assert run["finish_ms"] > 0


@pytest.mark.slow
def test_the_naive_way() -> None:
    run = uibench.run_stream(uibench.markdown_answer(150), "naive", rate=None)
    _check_run(run, 150)
    assert run["parsed_chars"] > 10 * run["chars"]  # the whole text, every piece


@pytest.mark.slow
def test_textual_markdown_stream() -> None:
    run = uibench.run_stream(uibench.markdown_answer(300), "markdownstream", rate=1000)
    _check_run(run, 300)
    assert run["finish_ms"] >= 0  # stream.stop()
    # Appends re-parse from the last block on, not the whole text (the naive way: ~150x at 300 pieces).
    assert run["parsed_chars"] < 75 * run["chars"]


@pytest.mark.slow
def test_markdown_stream_gives_up_once_the_screen_is_too_far_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its write() returns at once, so the feed is never held up: the screen's lag is what stops it.
    # Each append made 0.2 s slower without blocking the loop: the screen falls behind, the feed does not.
    from textual.await_complete import AwaitComplete
    from textual.widgets import Markdown

    real_append = Markdown.append

    def slow_append(self: Markdown, markdown: str) -> AwaitComplete:
        async def later() -> None:
            await asyncio.sleep(0.2)
            await real_append(self, markdown)

        return AwaitComplete(later())

    monkeypatch.setattr(Markdown, "append", slow_append)
    run = uibench.run_stream(uibench.markdown_answer(600), "markdownstream", rate=1000, max_lag=0.1)
    assert 0 < run["reached"] < 600 and run["tokens"] == 600


def test_a_run_that_falls_behind_stops_and_says_how_far_it_got() -> None:
    run = uibench.run_stream(uibench.markdown_answer(2000), "naive", rate=100_000, max_lag=0.05)
    assert 0 < run["reached"] < 2000 and run["tokens"] == 2000
    assert run["lag_ms"]["max"] > 0


@pytest.mark.slow
def test_report_prints_the_table_and_the_targets(capsys) -> None:
    pieces = uibench.markdown_answer(150)
    result = {"ours": uibench.run_stream(pieces, "ours", rate=2000), "rate": 2000, "textual": "x", "machine": "m",
              "max_lag": 10.0}
    targets = uibench.report(result)
    out = capsys.readouterr().out
    assert "near token 100" in out and "CPU ms per token" in out and "targets:" in out
    assert "MarkdownStream" not in out
    assert [name for name, _, _ in targets] == ["screen never more than 100 ms behind at 2,000 tokens/s"]

    result["markdownstream"] = uibench.run_stream(pieces, "markdownstream", rate=2000)
    targets = uibench.report(result)
    out = capsys.readouterr().out
    header = out.splitlines()[1]
    assert "ours (stream)" in header and "MarkdownStream" in header and "MdStream/ours" in header
    assert "stop() ms" in out
    assert [name for name, _, _ in targets][-1] == \
        "ours <= MarkdownStream's per-token cost at 100 tokens and lag <= 100 ms"


def _run(reached: int, cost: float | None, lag_max: float = 50.0) -> dict:
    windows = {} if cost is None else {10_000: {"cpu_ms_per_token": cost}}
    return {"reached": reached, "tokens": 10_000, "windows": windows, "caught_up": True, "lag_ms": {"max": lag_max}}


@pytest.mark.parametrize(("ours", "theirs", "passed", "figure"), [
    (_run(10_000, 0.4), _run(10_000, 1.5), True, "0.400 vs 1.500 ms/token, lag max 50 ms"),
    (_run(10_000, 2.0), _run(10_000, 1.5), False, "2.000 vs 1.500 ms/token"),
    (_run(10_000, 0.4, lag_max=150), _run(10_000, 1.5), False, "lag max 150 ms"),
    (_run(10_000, 0.4), _run(4_321, None), True, "MarkdownStream gave up at token 4,321, over 10 s behind"),
])
def test_the_target_against_markdown_stream(ours: dict, theirs: dict, passed: bool, figure: str) -> None:
    name, ok, text = uibench._beats_markdownstream(ours, theirs, 10.0)
    assert name == "ours <= MarkdownStream's per-token cost at 10,000 tokens and lag <= 100 ms"
    assert ok is passed and figure in text


@pytest.mark.slow
def test_start_up_timings() -> None:
    assert all(seconds > 0 for seconds in uibench.help_seconds(1))
    launch = uibench.first_frame()
    assert launch["alt_screen"] is not None and launch["first_frame"] is not None
    assert 0 < launch["alt_screen"] <= launch["first_frame"]
    assert launch["load_start"] is not None and launch["load_start"] > 0
    assert isinstance(launch["frame_before_load"], bool)


def test_the_shipping_code_has_no_benchmark_hook() -> None:
    # The start of the model load is recorded by the bench's own loader (bench.startup_child), not by the app.
    package = Path(uibench.__file__).parents[1]
    hooked = [path for path in package.rglob("*.py")
              if "bench" not in path.relative_to(package).parts and "DSVL_TRACE" in path.read_text()]
    assert hooked == []


@pytest.fixture
def benches(monkeypatch: pytest.MonkeyPatch) -> list:
    import dsvl_tui.bench.engine

    calls: list = []
    monkeypatch.setattr(dsvl_tui.bench.engine, "main", lambda argv: calls.append(("engine", argv)) or 0)
    monkeypatch.setattr(uibench, "main", lambda argv: calls.append(("ui", argv)) or 0)
    for name in ("DSVL_MODEL", "DSVL_DEVICE", "DSVL_DTYPE"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_bench_command_runs_both_and_passes_the_engine_options(benches) -> None:
    result = CliRunner().invoke(app, ["--model", "/m", "--dtype", "float32", "bench", "--layers", "2",
                                      "--new-tokens", "4", "--device", "cpu"], env={"DSVL_DEVICE": "cuda"})
    assert result.exit_code == 0, result.output
    assert benches == [("engine", ["--model=/m", "--device=cpu", "--dtype=float32", "--layers=2", "--new-tokens=4"]),
                       ("ui", [])]


def test_bench_command_skips_and_ignores_the_environment(benches) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["bench", "--skip-ui"], env={"DSVL_MODEL": "x/y"}).exit_code == 0
    assert runner.invoke(app, ["bench", "--skip-engine"]).exit_code == 0
    assert benches == [("engine", []), ("ui", [])]


# --- dsvl_tui.bench.render: key latency while a costly answer is drawn (issue 20) ---------------------------


def test_the_render_bench_has_the_four_answers_that_froze_the_tui() -> None:
    from dsvl_tui.bench import render as renderbench

    found = renderbench.answers()
    assert found["a* x 50,000"] == "a*" * 50_000 and found["x\\n x 200,000"] == "x\n" * 200_000
    assert found["table 3000 columns"].split("\n", 1)[0].count("|") == 3001
    assert found["list nested 3000"].count("- ") == 3000
    assert "list nested 3000 (9 MB)" in renderbench.answers(deep_stairs=True)


def test_the_render_bench_measures_keys_while_an_answer_is_drawn() -> None:
    from dsvl_tui.bench import render as renderbench

    result = renderbench.run("a*" * 20_000 + "\n\n" + "x\n" * 3_000, pieces=40, timeout=60)
    assert result["drawn_whole"] and result["chars"] == 46_002 and result["lines"] > 3_000
    assert result["quit_ms"] is not None and result["quit_ms"] >= 0
    assert result["max_frame_gap_ms"] > 0 and result["max_frame_cpu_ms"] >= 0
    for kind in ("typing", "escape"):
        keys = result[kind]
        assert keys["keys"] >= 1 and keys["lost"] == 0
        assert 0 <= keys["handled_median_ms"] <= keys["handled_max_ms"]
        # A letter changes the input, so a frame shows it; an Esc with nothing to stop may change nothing on
        # screen, and on an idle machine no frame follows it once the answer is drawn.
        shown = keys["shown_max_ms"]
        assert (shown is None and kind == "escape") or keys["handled_max_ms"] <= shown
    rows = renderbench.report({"x": result})
    assert len(rows) == 3 and rows[1].startswith("x ") and ("PASS" in rows[1] or "FAIL" in rows[1])
