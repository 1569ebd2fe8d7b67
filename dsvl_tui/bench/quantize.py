"""Benchmark: decode speed of each ``--quantize`` mode against the memory-bandwidth limit.

Run: ``python -m dsvl_tui.bench.quantize``.

Decoding reads every weight of the language model once per token, so a
mode's speed limit is the machine's read bandwidth over the bytes of
weights one token reads. In one run, on the same model (default: the
full-size random 1.3B checkpoint of ``bench.engine``):

- the read bandwidth, measured with the threads the decode uses (torch's
  ``sum`` over a 512 MiB tensor, best of several);
- per mode (none, int8, int4): the bytes of weights read per token, our
  decode rate (one text-only turn, a forced answer length), the limit that
  bandwidth sets and how close the decode comes to it, and the peak RSS of
  loading it, measured in a subprocess of its own (``ru_maxrss``);
- upstream's way (transformers ``generate`` on the unquantized model, every
  prompt with an image, as its CLI does) as the baseline.

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine.types import QUANTIZE_MODES

QUESTION = "Write a short poem about the sea."
BANDWIDTH_MIB = 512


def read_bandwidth(mib: int = BANDWIDTH_MIB, repeats: int = 7) -> float:
    """Bytes per second that a sum over a ``mib`` MiB float32 tensor reads, with torch's current threads (best run)."""
    import torch

    data = torch.ones(mib * 2**20 // 4)
    data.sum()  # touch every page first
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - started)
    return data.numel() * 4 / best


def load_peak_rss(model: str, device: str, dtype: str, quantize: str) -> int:
    """Peak RSS in bytes of a fresh Python that imports the engine and loads ``model`` in ``quantize`` mode.

    Linux keeps a process's ``ru_maxrss`` across fork and exec, so a child
    reports at least its parent's peak: call this before the parent loads a model.
    """
    code = ("import resource, sys, engine; "
            "engine.load(sys.argv[1], device=sys.argv[2], dtype=sys.argv[3], quantize=sys.argv[4]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-c", code, model, device, dtype, quantize], capture_output=True, text=True,
                          env=env, check=True)
    return int(done.stdout.strip().splitlines()[-1]) * 1024  # Linux reports KiB


def ours_decode(eng, new_tokens: int) -> dict[str, Any]:
    import engine

    settings = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=new_tokens,
                                         ignore_eos=True)
    stream = eng.stream([engine.Message("user", QUESTION)], settings)
    "".join(stream)
    return {"prompt_tokens": stream.stats.prompt_tokens, "decode_tps": stream.stats.tokens_per_second}


def run_mode(model: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    import engine
    from dsvl_tui.bench.engine import random_picture, upstream_turn
    from engine.quantize import decode_weight_bytes

    eng = engine.load(model, device=args.device, dtype=args.dtype, quantize=mode)
    lm = eng.model.language_model
    row: dict[str, Any] = {"mode": mode, "effective": eng.info.quantize, "note": eng.info.quantize_note,
                           "device": eng.info.device, "dtype": eng.info.dtype,
                           "weight_bytes_per_token": decode_weight_bytes(lm, lm.model.embed_tokens)}
    ours_decode(eng, 2)  # warm-up: first-call allocations and kernel choices
    row["ours"] = ours_decode(eng, args.new_tokens)
    if mode == "none" and not args.skip_upstream:
        picture = engine.Message("user", QUESTION, images=[random_picture(1)])
        row["upstream"] = upstream_turn(eng, [picture], args.new_tokens)
    del eng, lm
    gc.collect()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model",
                        help="hub id or folder (default: the full-size random 1.3B checkpoint, written once)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--layers", type=int, help="a random 1.3B checkpoint with only N language-model layers")
    parser.add_argument("--new-tokens", type=int, default=8, help="forced answer length per mode")
    parser.add_argument("--modes", default=",".join(QUANTIZE_MODES),
                        help="comma-separated modes (default: none,int8,int4)")
    parser.add_argument("--threads", type=int, help="torch threads for the decode and the bandwidth (default: torch's)")
    parser.add_argument("--skip-upstream", action="store_true", help="leave out upstream's way")
    parser.add_argument("--skip-rss", action="store_true", help="leave out the load-peak-RSS subprocesses")
    parser.add_argument("--json", type=Path, default=Path("quantbench.json"), help="where to write the results")
    args = parser.parse_args(argv)

    import torch

    from dsvl_tui.bench.engine import random_checkpoint
    from engine.types import parse_quantize

    modes = [parse_quantize(m) for m in args.modes.split(",") if m.strip()]
    model = args.model or str(random_checkpoint(args.layers))
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    bandwidth = read_bandwidth()
    print(f"read bandwidth {bandwidth / 1e9:.1f} GB/s ({threads} threads, sum over {BANDWIDTH_MIB} MiB)",
          file=sys.stderr)
    # First, while this process is small: a child's ru_maxrss starts from its parent's.
    peaks = {} if args.skip_rss else {mode: load_peak_rss(model, args.device, args.dtype, mode) for mode in modes}
    rows = []
    for mode in modes:
        row = run_mode(model, mode, args)
        if mode in peaks:
            row["load_peak_rss"] = peaks[mode]
        tps = row["ours"]["decode_tps"] or 0.0
        row["limit_tps"] = bandwidth / row["weight_bytes_per_token"]
        row["of_limit"] = tps / row["limit_tps"]
        rows.append(row)
        print(f"{mode}: {tps:.2f} tok/s, {row['weight_bytes_per_token'] / 1e9:.2f} GB/token", file=sys.stderr)

    first = rows[0]
    machine = f"CPU ({os.cpu_count()} cores, {platform.machine()})" if first["device"] == "cpu" else first["device"]
    if first["device"].startswith("cuda"):
        machine = torch.cuda.get_device_name(first["device"])
    print(f"model {model} | {first['device']} {first['dtype']} | {machine} | {threads} threads | "
          f"read bandwidth {bandwidth / 1e9:.1f} GB/s | forced {args.new_tokens} new tokens")
    base = next((r for r in rows if r["mode"] == "none"), None)
    upstream = (base or {}).get("upstream")
    if upstream:
        print(f"upstream's way (transformers generate, unquantized): {upstream['decode_tps']:.2f} tok/s")
    print(f"{'quant':>5} | {'GB/token':>8} | {'tok/s':>6} | {'limit':>6} | {'of limit':>8} | {'vs none':>7} | "
          f"{'vs upstream':>11} | {'load peak RSS':>13}")
    for row in rows:
        tps = row["ours"]["decode_tps"] or 0.0
        versus = f"{tps / base['ours']['decode_tps']:.2f}x" if base and base["ours"]["decode_tps"] else "-"
        against = f"{tps / upstream['decode_tps']:.2f}x" if upstream else "-"
        rss = f"{row['load_peak_rss'] / 2**30:.2f} GiB" if "load_peak_rss" in row else "-"
        label = row["effective"] if row["effective"] == row["mode"] else f"{row['mode']}->{row['effective']}"
        print(f"{label:>5} | {row['weight_bytes_per_token'] / 1e9:>8.2f} | {tps:>6.2f} | {row['limit_tps']:>6.2f} | "
              f"{row['of_limit']:>8.0%} | {versus:>7} | {against:>11} | {rss:>13}")
        if row["note"]:
            print(f"      note: {row['note']}")
    result = {"model": model, "machine": machine, "threads": threads, "read_bandwidth": bandwidth,
              "new_tokens": args.new_tokens, "modes": rows}
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
