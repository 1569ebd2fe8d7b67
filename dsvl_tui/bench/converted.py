"""Benchmark: the engine against transformers' own DeepSeek-VL on a converted checkpoint:
``python -m dsvl_tui.bench.converted``.

Both run the same full-size random 1.3B checkpoint in transformers'
converted layout (deepseek-community/* style, written once by
transformers' own classes; ``--layers N`` keeps only N language-model
layers for quick runs), greedily with a forced answer length, over
``bench.engine``'s scripted 8-turn chat (images in turns 1 and 5), turn by
turn in one process, taking turns at going first. transformers' way is its
documented one: each turn the whole conversation's ids and every picture
through its image processor into ``DeepseekVLForConditionalGeneration.generate``.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .engine import CACHE, QUESTIONS, ours_turn, random_picture


def converted_checkpoint(layers: int | None) -> Path:
    import torch

    from engine.testing.converted_checkpoints import write_converted_checkpoint

    name = "deepseek-vl-1.3b-converted-random" + ("" if layers is None else f"-{layers}layers")
    folder = CACHE / name
    if not (folder / "model.safetensors").exists() and not (folder / "model.safetensors.index.json").exists():
        print(f"writing the random 1.3B checkpoint in the converted layout to {folder} (once)...", file=sys.stderr)
        torch.set_default_dtype(torch.bfloat16)  # half the memory while writing; the file holds bf16, as the hub's
        try:
            write_converted_checkpoint(folder, tower="siglip", size="full", lm_layers=layers)
        finally:
            torch.set_default_dtype(torch.float32)
    return folder


def transformers_turn(model, image_processor, eng, history, new_tokens: int) -> dict:
    """One turn transformers' way: the whole conversation, every picture, through ``generate``."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    started = time.perf_counter()
    # the same ids as the repository's chat template renders (tests/engine/test_converted.py)
    prepared = eng.prepare(history)
    pictures = [image for message in history for image in message.images]
    inputs: dict[str, Any] = {"input_ids": prepared.input_ids[None]}
    if pictures:
        inputs["pixel_values"] = image_processor(pictures, return_tensors="pt")["pixel_values"].to(model.dtype)
    times: list[float] = []

    class Clock(BaseStreamer):
        def put(self, value):
            times.append(time.perf_counter())

        def end(self):
            pass

    with torch.inference_mode():
        model.generate(**inputs, attention_mask=torch.ones_like(inputs["input_ids"]), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=eng.prompt_format.eos_id,
                       eos_token_id=eng.prompt_format.eos_id, streamer=Clock())
    ended = time.perf_counter()
    first = times[1]  # generate puts the prompt first, then each new token
    return {"prompt_tokens": len(prepared.input_ids), "ttft": first - started,
            "decode_tps": (new_tokens - 1) / max(ended - first, 1e-9)}


def main(argv: list[str] | None = None) -> int:
    # The docstring's first sentence, which runs over two lines, as one line.
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--model",
                        help="a converted-layout folder or hub id (default: the random 1.3B one, written once)")
    parser.add_argument("--layers", type=int, help="a random checkpoint with only N language-model layers (quick runs)")
    parser.add_argument("--dtype", default="float32", help="both models' dtype on the CPU")
    parser.add_argument("--new-tokens", type=int, default=32, help="forced answer length per turn")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--json", type=Path, default=Path("bench-converted.json"), help="where to write the results")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoImageProcessor, DeepseekVLForConditionalGeneration

    import engine

    model_path = args.model or str(converted_checkpoint(args.layers))
    started = time.perf_counter()
    eng = engine.load(model_path, device="cpu", dtype=args.dtype)
    ours_load = time.perf_counter() - started
    started = time.perf_counter()
    dtype = getattr(torch, args.dtype)
    theirs = DeepseekVLForConditionalGeneration.from_pretrained(model_path, dtype=dtype).eval()
    image_processor = AutoImageProcessor.from_pretrained(model_path)
    theirs_load = time.perf_counter() - started

    pictures = {0: random_picture(1), 4: random_picture(2)}
    history: list = []
    rows: list[dict[str, Any]] = []
    for turn, (question, with_image) in enumerate(QUESTIONS[: args.turns]):
        history.append(engine.Message("user", question, images=[pictures[turn]] if with_image else []))
        for name in ("transformers", "ours") if turn % 2 == 0 else ("ours", "transformers"):
            if name == "transformers":
                them = transformers_turn(theirs, image_processor, eng, history, args.new_tokens)
            else:
                us, answer = ours_turn(eng, history, args.new_tokens)
        history.append(engine.Message("assistant", answer))
        rows.append({"turn": turn + 1, "transformers": them, "ours": us})
        print(f"turn {turn + 1}: prompt {us['prompt_tokens']} tokens, "
              f"ttft transformers {them['ttft']:.2f}s ours {us['ttft']:.2f}s", file=sys.stderr)

    machine = f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    print(f"model {model_path} ({eng.model.spec.layout} layout) | {eng.info.parameters:,} parameters "
          f"| cpu {eng.info.dtype} | {machine}")
    print(f"load: ours {ours_load:.2f} s, transformers {theirs_load:.2f} s "
          f"| forced {args.new_tokens} new tokens per turn")
    print(f"{'turn':>4} {'prompt':>7} {'reused':>7} | {'ttft tf s':>9} {'ttft ours s':>11} {'ratio':>6} "
          f"| {'tok/s tf':>8} {'tok/s ours':>10} {'ratio':>6}")
    for row in rows:
        them, us = row["transformers"], row["ours"]
        print(f"{row['turn']:>4} {us['prompt_tokens']:>7} {us['reused_tokens']:>7} "
              f"| {them['ttft']:>9.3f} {us['ttft']:>11.3f} "
              f"{us['ttft'] / them['ttft']:>6.2f} | {them['decode_tps']:>8.2f} {us['decode_tps']:>10.2f} "
              f"{us['decode_tps'] / them['decode_tps']:>6.2f}")
    summary = {
        "ttft_speedup_last_turn": rows[-1]["transformers"]["ttft"] / rows[-1]["ours"]["ttft"],
        "decode_ratio_mean": statistics.mean(r["ours"]["decode_tps"] / r["transformers"]["decode_tps"] for r in rows),
    }
    print(f"last-turn ttft {summary['ttft_speedup_last_turn']:.1f}x faster than transformers "
          f"| decode ours/transformers {summary['decode_ratio_mean']:.2f}x")
    result = {"model": model_path, "machine": machine, "dtype": eng.info.dtype, "new_tokens": args.new_tokens,
              "load_seconds": {"ours": ours_load, "transformers": theirs_load}, "turns": rows, "summary": summary}
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
