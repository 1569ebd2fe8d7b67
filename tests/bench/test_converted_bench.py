"""bench.converted runs both ways on a converted checkpoint and writes what it printed."""

from __future__ import annotations

import json

from dsvl_tui.bench import converted
from engine.testing.converted_checkpoints import write_converted_checkpoint


def test_engine_and_transformers_side_by_side(tmp_path, capsys) -> None:
    folder = write_converted_checkpoint(tmp_path / "converted", seed=2)
    out = tmp_path / "bench.json"
    assert converted.main(["--model", str(folder), "--turns", "2", "--new-tokens", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["turn"] for row in result["turns"]] == [1, 2]
    second = result["turns"][1]
    # The engine reused turn 1.
    assert second["ours"]["reused_tokens"] == result["turns"][0]["ours"]["prompt_tokens"] > 0
    assert second["transformers"]["prompt_tokens"] == second["ours"]["prompt_tokens"]
    assert all(row[way]["ttft"] > 0 and row[way]["decode_tps"] > 0
               for row in result["turns"] for way in ("ours", "transformers"))
    assert "(converted layout)" in capsys.readouterr().out
