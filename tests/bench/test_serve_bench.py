"""The HTTP server bench (``dsvl_tui.bench.serve``) runs end to end on the tiny checkpoint."""

from __future__ import annotations

import json

import pytest

from dsvl_tui.bench import serve as serve_bench


@pytest.mark.slow
def test_the_serve_bench_times_both_ways_and_forces_the_answer_length(tiny_siglip, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert serve_bench.main(["--model", str(tiny_siglip), "--device", "cpu", "--turns", "3", "--new-tokens", "6",
                             "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["turn"] for row in result["turns"]] == [1, 2, 3]
    for row in result["turns"]:
        # ignore_eos travels over HTTP too, so both ways decode exactly the forced length
        assert row["local"]["new_tokens"] == row["http"]["new_tokens"] == 6
        assert row["local"]["ttft"] > 0 and row["http"]["ttft"] > 0
        # the server runs in its own process with its own engine, so both ways are the very same greedy chat,
        # and the tokens before the first text are counted once for both
        assert row["same_answer"] and row["local"]["held_tokens"] == row["http"]["held_tokens"] >= 0
        assert row["local"]["ttft"] <= row["local"]["first_text"]
    assert result["turns"][1]["local"]["reused_tokens"] > 0  # the second turn reuses the first one's prefix
    assert set(result["summary"]) >= {"ttft_added_ms_median", "decode_added_pct_median", "http_ttft_last_over_turn2"}
    printed = capsys.readouterr().out
    assert "HTTP adds" in printed and "target <= 50" in printed and "prefix reuse through the API" in printed
