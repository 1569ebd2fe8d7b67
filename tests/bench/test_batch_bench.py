"""``python -m dsvl_tui.bench.batch`` runs end to end (on the tiny checkpoint: its figures mean nothing)."""

from __future__ import annotations

import json

import pytest

from dsvl_tui.bench import batch as bench


def test_all_decoding_counts_only_the_window_in_which_every_stream_decodes():
    # Stream A: tokens at t=0..9 (one a second); stream B starts at t=4 and ends at t=7.
    a = [(float(t), t + 1) for t in range(10)]
    b = [(float(t), t - 3) for t in range(4, 8)]
    figures = bench.all_decoding([a, b])
    assert figures["all_decoding_s"] == 3.0  # from B's first token (4) to B's last (7)
    assert figures["all_decoding_tok_s"] == pytest.approx((3 + 3) / 3.0)  # A: 5 -> 8, B: 1 -> 4
    # Streams that take turns (max-batch 1) have no such window; neither has a stream without tokens.
    assert bench.all_decoding([[(0.0, 1), (1.0, 2)], [(2.0, 1), (3.0, 2)]])["all_decoding_tok_s"] is None
    assert bench.all_decoding([a, []])["all_decoding_tok_s"] is None


@pytest.mark.slow
def test_batch_bench_runs_both_ways_and_prints_the_steady_state(tiny_siglip, tmp_path, capsys):
    out = tmp_path / "batchbench.json"
    assert bench.main(["--model", str(tiny_siglip), "--new-tokens", "48", "--max-batch", "4", "--quantize", "none",
                       "--output", str(out)]) == 0
    mode = json.loads(out.read_text())["modes"][0]
    four = mode["streams"]["4"]
    assert four["max_batch_4"]["aggregate_tok_s"] > 0 and four["max_batch_1"]["aggregate_tok_s"] > 0
    # Four streams batched decode together for a while; one at a time they never do.
    assert four["max_batch_4"]["all_decoding_tok_s"] > 0 and four["max_batch_4"]["all_decoding_s"] > 0
    assert four["max_batch_1"]["all_decoding_tok_s"] is None
    assert mode["arrival_ttft"]["while_4_s"] > 0 and mode["kv_bytes_per_token"] > 0
    assert "all decoding" in capsys.readouterr().out
