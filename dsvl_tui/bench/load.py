"""Measure model load time and peak memory: ``python -m dsvl_tui.bench.load``.

Writes the full-size 1.3B checkpoint with random weights (original layout,
bf16 like upstream's files) once into a cache folder, then loads it in a
fresh process per run and prints a table: load seconds, peak RSS, weight
bytes in the chosen dtype and their ratio. Loading runs in a child process
so that writing the checkpoint does not count towards the peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CACHE = (Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                 / "dsvl-chat" / "bench" / "deepseek-vl-1.3b-random")


def _child(folder: str, device: str, dtype: str) -> None:
    import torch

    import engine

    started = time.perf_counter()
    eng = engine.load(folder, device=device, dtype=dtype)
    if eng.info.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    weight_bytes = sum(p.numel() * p.element_size() for p in eng.model.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    gpu_peak = torch.cuda.max_memory_allocated() if eng.info.device.startswith("cuda") else 0
    print(json.dumps({"seconds": seconds, "peak_rss": peak, "weight_bytes": weight_bytes, "gpu_peak": gpu_peak,
                      "device": eng.info.device, "dtype": eng.info.dtype, "parameters": eng.info.parameters}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="checkpoint folder (default: the random full-size 1.3B, written once)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.model, args.device, args.dtype)
        return 0

    folder = Path(args.model) if args.model else DEFAULT_CACHE
    if args.model is None and not (folder / "model.safetensors").exists():
        import torch

        from engine.testing.random_checkpoints import write_checkpoint

        print(f"writing the full-size random 1.3B checkpoint to {folder} (once)...", file=sys.stderr)
        write_checkpoint(folder, tower="siglip", size="full", dtype=torch.bfloat16)
    runs = []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-m", "dsvl_tui.bench.load", "--child", "--model", str(folder),
             "--device", args.device, "--dtype", args.dtype],
            check=True, capture_output=True, text=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    gib = 1024 ** 3
    print(f"model: {folder}  device: {runs[0]['device']}  dtype: {runs[0]['dtype']}  "
          f"parameters: {runs[0]['parameters']:,}")
    print(f"{'run':>4} {'load s':>8} {'peak RSS GiB':>13} {'weights GiB':>12} {'RSS/weights':>12} {'GPU peak GiB':>13}")
    for i, r in enumerate(runs, 1):
        print(f"{i:>4} {r['seconds']:>8.2f} {r['peak_rss'] / gib:>13.2f} {r['weight_bytes'] / gib:>12.2f} "
              f"{r['peak_rss'] / r['weight_bytes']:>12.2f} {r['gpu_peak'] / gib:>13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
