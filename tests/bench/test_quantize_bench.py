"""``python -m dsvl_tui.bench.quantize`` runs end to end (on the tiny checkpoint: its figures mean nothing)."""

from __future__ import annotations

import json

import pytest

from dsvl_tui.bench import quantize as bench


@pytest.mark.slow
def test_quantize_bench_writes_every_mode_side_by_side(tiny_siglip, tmp_path, capsys):
    out = tmp_path / "quantbench.json"
    assert bench.main(["--model", str(tiny_siglip), "--device", "cpu", "--new-tokens", "3", "--skip-rss",
                       "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {row["mode"]: row for row in result["modes"]}
    assert list(rows) == ["none", "int8", "int4"] and result["read_bandwidth"] > 0
    assert all(row["effective"] == mode and row["ours"]["decode_tps"] > 0 for mode, row in rows.items())
    assert rows["none"]["upstream"]["decode_tps"] > 0 and "upstream" not in rows["int8"]
    # Fewer bytes per token, so a higher limit.
    per_token = {mode: rows[mode]["weight_bytes_per_token"] for mode in ("none", "int8", "int4")}
    assert per_token["none"] > per_token["int8"] > per_token["int4"]
    assert rows["int4"]["limit_tps"] > rows["none"]["limit_tps"]
    table = capsys.readouterr().out
    assert "quant | GB/token" in table and " int4 |" in table and "upstream's way" in table


@pytest.mark.slow
def test_load_peak_rss_is_measured_in_a_subprocess(tiny_siglip):
    peak = bench.load_peak_rss(str(tiny_siglip), "cpu", "auto", "int8")
    assert 50 * 2**20 < peak < 8 * 2**30  # torch alone takes more than 50 MiB


@pytest.mark.slow
def test_engine_bench_runs_both_ways_on_the_quantized_model(tiny_siglip, tmp_path, capsys):
    from dsvl_tui.bench import engine as engine_bench

    out = tmp_path / "bench.json"
    assert engine_bench.main(["--model", str(tiny_siglip), "--device", "cpu", "--turns", "2", "--new-tokens", "3",
                              "--quantize", "int4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["quantize"] == {"requested": "int4", "used": "int4", "note": None}
    assert all(turn["upstream"]["decode_tps"] > 0 and turn["ours"]["decode_tps"] > 0 for turn in result["turns"])
    assert "cpu float32 | int4 weights |" in capsys.readouterr().out
