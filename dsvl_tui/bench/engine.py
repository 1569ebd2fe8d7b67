"""Benchmark: upstream's way against ours on the same model, side by side: ``python -m dsvl_tui.bench.engine``.

Upstream's way (its quick start, CLI and demo) re-tokenizes the whole
conversation each turn, re-encodes every image (a blank one when there is
none) and prefills everything through ``generate(inputs_embeds=...)``.
Ours keeps the conversation's KV cache and encoded images between turns
(and with ``--compile``, decodes with the compiled step on a static KV
cache where it can; upstream's way stays eager). Both run greedily with a
forced answer length over the same scripted 8-turn chat (images in turns 1
and 5), turn by turn in one process, taking turns at going first. Prints
a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from engine.types import QUANTIZE_MODES

QUESTIONS = [
    ("Describe this picture in detail.", True),
    ("What colours stand out the most?", False),
    ("Write a short poem about it.", False),
    ("Now summarise the poem in one sentence.", False),
    ("Here is a second picture. How does it differ from the first?", True),
    ("Which of the two would make a better poster?", False),
    ("List three adjectives for each picture.", False),
    ("Thank you. Any final thoughts?", False),
]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dsvl-chat" / "bench"


class PeakRss:
    """Samples this process's RSS in the background; ``peak`` is the highest seen."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def random_picture(seed: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))


def upstream_turn(eng, history, new_tokens: int) -> dict:
    """One turn the way upstream's CLI does it; returns time to first token and decode rate."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    started = time.perf_counter()
    prepared = eng.prepare(history)
    model = eng.model
    with torch.inference_mode():
        images = prepared.images or [torch.zeros(3, eng.preprocess.image_size, eng.preprocess.image_size)]
        features = model.encode_images(torch.stack(images))  # every image, every turn
        embeds = model.embed(prepared.input_ids, features if prepared.images else None, eng.prompt_format.image_id)
        times: list[float] = []

        class Clock(BaseStreamer):
            def put(self, value):
                # generate() first puts the prompt ids (none here: embeddings only), then each new token.
                if value.numel():
                    times.append(time.perf_counter())

            def end(self):
                pass

        model.language_model.generate(
            inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device),
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True,
            pad_token_id=eng.prompt_format.eos_id, eos_token_id=eng.prompt_format.eos_id, streamer=Clock(),
        )
    _sync(eng)
    ended = time.perf_counter()
    first = times[0]
    return {"prompt_tokens": len(prepared.input_ids), "ttft": first - started,
            "decode_tps": (new_tokens - 1) / max(ended - first, 1e-9)}


def ours_turn(eng, history, new_tokens: int) -> tuple[dict, str]:
    import engine

    settings = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=new_tokens,
                                         ignore_eos=True)
    stream = eng.stream(history, settings, cache_key="bench")
    text = "".join(stream)
    _sync(eng)
    s = stream.stats
    return {"prompt_tokens": s.prompt_tokens, "ttft": s.time_to_first_token, "decode_tps": s.tokens_per_second,
            "reused_tokens": s.reused_tokens, "token_ids": list(stream.token_ids)}, text


def _sync(eng) -> None:
    from engine.decode import synchronize

    synchronize(eng.info.device)


def reset_peak_memory(device: str) -> None:
    """Start counting peak GPU memory afresh on ``device`` (the engine's GPU, not the current one)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str) -> int:
    """Bytes of GPU memory allocated at most on ``device`` since the last reset (0 off CUDA)."""
    if not device.startswith("cuda"):
        return 0
    import torch

    return torch.cuda.max_memory_allocated(device)


class CompileClock:
    """A load progress callback that times the compile stage (warm-up of the compiled decode step)."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.seconds: float | None = None

    def __call__(self, event) -> None:
        if event.stage == "compile" and self.started is None:
            self.started = time.perf_counter()
        elif event.stage == "ready" and self.started is not None:
            self.seconds = time.perf_counter() - self.started


def random_checkpoint(layers: int | None) -> Path:
    import torch

    from engine.testing.random_checkpoints import write_checkpoint

    folder = CACHE / ("deepseek-vl-1.3b-random" if layers is None else f"deepseek-vl-1.3b-random-{layers}layers")
    if not (folder / "model.safetensors").exists():
        print(f"writing the full-size random 1.3B checkpoint to {folder} (once)...", file=sys.stderr)
        write_checkpoint(folder, tower="siglip", size="full", dtype=torch.bfloat16, lm_layers=layers)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model",
                        help="hub id or folder (default: the full-size random 1.3B checkpoint, written once)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--layers", type=int,
                        help="use a random 1.3B checkpoint with only N language-model layers (quick runs)")
    parser.add_argument("--new-tokens", type=int, default=32, help="forced answer length per turn")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--compile", action="store_true",
                        help="ours decodes with the compiled step (CUDA graphs) where it can; upstream's stays eager")
    parser.add_argument("--quantize", default="none", choices=QUANTIZE_MODES,
                        help="both ways run on the model with int8 or int4 language-model weights "
                             "(python -m dsvl_tui.bench.quantize compares the modes side by side)")
    parser.add_argument("--json", type=Path, default=Path("bench.json"), help="where to write the results")
    args = parser.parse_args(argv)

    import torch

    import engine

    model = args.model or str(random_checkpoint(args.layers))
    with PeakRss() as load_rss:
        started = time.perf_counter()
        compile_clock = CompileClock()
        eng = engine.load(model, device=args.device, dtype=args.dtype, compile=args.compile, progress=compile_clock,
                          quantize=args.quantize)
        load_seconds = time.perf_counter() - started
    if args.compile and not eng.info.compiled:
        print(f"note: --compile: not used ({eng.info.compile_note}); ours decodes eagerly", file=sys.stderr)
    # Allocated at load and kept: it counts in both ways' peak GPU memory below.
    static_bytes = eng._static.nbytes() if eng._static is not None else 0
    reset_peak_memory(eng.info.device)
    pictures = {0: random_picture(1), 4: random_picture(2)}
    history: list = []
    rows: list[dict[str, Any]] = []
    peaks = {"upstream": 0, "ours": 0}
    for turn, (question, with_image) in enumerate(QUESTIONS[: args.turns]):
        history.append(engine.Message("user", question, images=[pictures[turn]] if with_image else []))
        # Who goes first alternates: the second one runs right after the first's long prefill, on a
        # machine that may have slowed down for it (heat, other processes), and neither side should
        # always pay that.
        for name in ("upstream", "ours") if turn % 2 == 0 else ("ours", "upstream"):
            reset_peak_memory(eng.info.device)
            with PeakRss() as rss:
                if name == "upstream":
                    up = upstream_turn(eng, history, args.new_tokens)
                else:
                    us, answer = ours_turn(eng, history, args.new_tokens)
            gpu = peak_memory(eng.info.device)
            peaks[name] = max(peaks[name], gpu or rss.peak)
        history.append(engine.Message("assistant", answer))
        rows.append({"turn": turn + 1, "upstream": up, "ours": us})
        print(f"turn {turn + 1}: prompt {us['prompt_tokens']} tokens, "
              f"ttft upstream {up['ttft']:.2f}s ours {us['ttft']:.2f}s", file=sys.stderr)

    memory_kind = "GPU allocated" if eng.info.device.startswith("cuda") else "RSS"
    machine = (torch.cuda.get_device_name(eng.info.device) if eng.info.device.startswith("cuda")
               else f"CPU ({os.cpu_count()} cores, {platform.machine()})")
    quantized = "" if eng.info.quantize == "none" else f" | {eng.info.quantize} weights"
    if eng.info.quantize_note:
        quantized += f" | quantize: {eng.info.quantize_note}"
    print(f"model {model} | {eng.info.parameters:,} parameters "
          f"| {eng.info.device} {eng.info.dtype}{quantized} | {machine}")
    if not args.compile:
        how = ""
    elif eng.info.compiled:
        how = f" | ours: compiled decode (static KV cache {static_bytes / 2**30:.2f} GiB, in both peaks)"
    else:
        how = f" | --compile: not used ({eng.info.compile_note}), ours decodes eagerly"
    print(f"load {load_seconds:.2f} s, peak RSS while loading {load_rss.peak / 2**30:.2f} GiB "
          f"| forced {args.new_tokens} new tokens per turn" + how)
    print(f"{'turn':>4} {'prompt':>7} {'reused':>7} | {'ttft up s':>9} {'ttft ours s':>11} {'ratio':>6} "
          f"| {'tok/s up':>8} {'tok/s ours':>10} {'ratio':>6}")
    for row in rows:
        up, us = row["upstream"], row["ours"]
        print(f"{row['turn']:>4} {us['prompt_tokens']:>7} {us['reused_tokens']:>7} "
              f"| {up['ttft']:>9.3f} {us['ttft']:>11.3f} "
              f"{us['ttft'] / up['ttft']:>6.2f} | {up['decode_tps']:>8.2f} {us['decode_tps']:>10.2f} "
              f"{us['decode_tps'] / up['decode_tps']:>6.2f}")
    summary = {
        "ttft_turn8_over_turn2_ours": rows[-1]["ours"]["ttft"] / rows[1]["ours"]["ttft"] if len(rows) > 1 else None,
        "ttft_speedup_last_turn": rows[-1]["upstream"]["ttft"] / rows[-1]["ours"]["ttft"],
        "decode_ratio_mean": statistics.mean(r["ours"]["decode_tps"] / r["upstream"]["decode_tps"] for r in rows),
        "peak_memory_gib": {k: v / 2**30 for k, v in peaks.items()},
    }
    print(f"ours: ttft last/turn 2 {summary['ttft_turn8_over_turn2_ours']:.2f}x "
          f"| last-turn ttft {summary['ttft_speedup_last_turn']:.1f}x faster than upstream "
          f"| decode ours/upstream {summary['decode_ratio_mean']:.2f}x | peak {memory_kind} upstream "
          f"{summary['peak_memory_gib']['upstream']:.2f} GiB ours {summary['peak_memory_gib']['ours']:.2f} GiB")
    result = {"model": model, "machine": machine, "device": eng.info.device, "dtype": eng.info.dtype,
              "quantize": {"requested": args.quantize, "used": eng.info.quantize, "note": eng.info.quantize_note},
              "load_seconds": load_seconds, "load_peak_rss": load_rss.peak, "new_tokens": args.new_tokens,
              "turns": rows, "summary": summary,
              "compile": {"requested": args.compile, "used": eng.info.compiled, "note": eng.info.compile_note,
                          "static_cache_bytes": static_bytes, "warm_up_seconds": compile_clock.seconds}}
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
