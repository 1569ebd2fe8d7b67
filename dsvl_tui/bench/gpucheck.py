"""The prepared GPU check, one command: ``python -m dsvl_tui.bench.gpucheck``.

A GPU box lent to this project reaches no package registry, so the project
is not installed there: ``scripts/gpu-wheels`` (where pip works) puts the
few wheels it lacks in ``.whl/``, and on the box, from the repository root,

    scripts/gpu-check [OPTIONS]

installs them into a folder of its own and runs this module with the
repository on the path (docs/benchmarks.md, "GPU check", has the time plan).
Nothing here needs the project's installed metadata or console script.

It runs five parts
(each behind a flag, so a rerun can take only what failed: ``--tests``,
``--bench``, ``--big``, ``--quant``, ``--batch``; none named means all five):

- tests: ``pytest -m cuda tests/engine/test_cuda_gpu.py``: logits of the tiny and
  the full-size random 1.3B checkpoint on CUDA in bf16 and fp32 against the
  CPU fp32 result within the tolerances stated there; greedy output the
  same eager and with ``--compile``; no recompilation over 8 turns of 3
  conversations in one engine with prompts of different lengths (counted).
- bench: ``dsvl_tui.bench.engine`` on the full-size random 1.3B checkpoint in bf16,
  run twice (eager, then ``--compile``): per-turn time to first token and
  decode tok/s for upstream's way, ours eager and ours compiled, the cold
  compile warm-up and the peak GPU memory of each.
- big: the full-size 7B (hybrid tower) built in GPU memory with random
  weights (writing its 14 GB to disk would not fit the time), two turns in
  bf16 with an image, its peak GPU memory.
- quant: the same 7B with ``--quantize int8`` and ``int4`` (torchao's
  weight-only configs; each layer quantized as soon as its random weights
  are made, as ``engine.load`` does while reading them): peak GPU memory and
  decode tok/s of the same two turns, against the 8-12 GB cards bf16 shuts out.
  Without a torchao built for this torch the part is skipped and says so
  ("no torchao for this torch"), instead of failing.
- batch: the full-size 1.3B built in GPU memory with random weights, bf16,
  one engine with ``max_batch`` 32 (batches decode eagerly: no CUDA graphs
  for batch sizes): aggregate decode tok/s of 1, 4, 16 and 32 concurrent
  streams (``dsvl_tui.bench.batch``'s measure: each its own question, a
  forced answer length, greedy), each against 1 stream; target 8x at 16.

It prints one table (the targets with PASS/FAIL beside the measured
figures) and writes JSON (``--json``, default ``gpucheck.json``; rewritten
after every part, so a run stopped at a time limit keeps what it finished). The exit
code is 1 if a part failed (a test failed, a step raised), else 0; a missed
target is reported, not an error (it is a benchmark, not a timed test).

``--dry-run`` runs the same steps on the CPU against tiny checkpoints (the
CUDA-marked tests with ``DSVL_CUDA_TESTS_ON_CPU=1``, the compiled step traced
with ``aot_eager``), so the script is known to work before a GPU is lent;
CI runs it. Its figures mean nothing and no target is judged.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

GIB = 2**30
ROOT = Path(__file__).resolve().parents[2]  # the checkout: dsvl_tui/bench/gpucheck.py
WORK = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dsvl-chat" / "gpucheck"
PARTS = ("tests", "bench", "big", "quant", "batch")
BATCH_STREAMS = (1, 4, 16, 32)  # concurrent streams of the batch part
BATCH_NEW_TOKENS = 64  # tokens each stream decodes there (8 in a dry run)
# The targets of the GPU table (issue 10): (key, what, how it is judged, limit).
TARGETS = [
    ("decode_compiled_over_upstream", "1.3B bf16 decode, compiled / upstream's way", ">=", 3.0),
    ("decode_compiled_tps", "1.3B bf16 decode, compiled, tok/s", ">=", 300.0),
    ("ttft_last_over_turn2", "ours compiled: TTFT of the last turn / turn 2", "<=", 1.3),
    ("compile_warm_up_s", "cold compile warm-up, s", "<=", 60.0),
    ("big_peak_gib", "7B bf16 peak GPU memory, GiB", "<", 24.0),
    ("big_int8_peak_gib", "7B int8 peak GPU memory, GiB", "<", 12.0),
    ("big_int4_peak_gib", "7B int4 peak GPU memory, GiB", "<", 8.0),
    ("batch_16_over_1", "1.3B bf16 batched decode, 16 streams / 1 stream", ">=", 8.0),
]


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores, {platform.machine()})"


# -- the parts -------------------------------------------------------------------------------------------------------

def run_tests(tiny: Path, full: Path | None, dry_run: bool, work: Path) -> dict[str, Any]:
    """The CUDA-marked tests, in a child pytest; their measured figures come back through a report file."""
    report = work / "tests-report.json"
    report.unlink(missing_ok=True)
    env = dict(os.environ, DSVL_GPUCHECK_REPORT=str(report), DSVL_GPUCHECK_TINY_CHECKPOINT=str(tiny))
    if full is not None:
        env["DSVL_GPUCHECK_FULL_CHECKPOINT"] = str(full)
    if dry_run:
        env["DSVL_CUDA_TESTS_ON_CPU"] = "1"
    tests = ROOT / "tests" / "engine" / "test_cuda_gpu.py"
    if not tests.exists():
        raise RuntimeError(f"{tests} is missing; run gpucheck from a checkout of the repository")
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", str(tests)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    print(output.rstrip(), file=sys.stderr)
    summary = next((line for line in reversed(output.splitlines())
                    if " in " in line and ("passed" in line or "failed" in line or "error" in line)), "")
    figures = json.loads(report.read_text()) if report.exists() else {}
    return {"ok": done.returncode == 0, "returncode": done.returncode, "summary": summary.strip("= "),
            "figures": figures, "output_tail": output[-4000:]}


def run_bench(model: Path, device: str, dtype: str, dry_run: bool, work: Path) -> dict[str, Any]:
    """dsvl_tui.bench.engine twice on one checkpoint: eager, then --compile; the two runs' figures side by side."""
    from dsvl_tui.bench import engine as bench

    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        out = work / f"bench-{name}.json"
        argv = ["--model", str(model), "--device", device, "--dtype", dtype, "--json", str(out), *extra]
        if dry_run:
            argv += ["--turns", "3", "--new-tokens", "4"]
        print(f"gpucheck: dsvl_tui.bench.engine {' '.join(argv)}", file=sys.stderr)
        if bench.main(argv) != 0:
            raise RuntimeError(f"dsvl_tui.bench.engine {' '.join(argv)} failed")
        runs[name] = json.loads(out.read_text())
        _free_gpu()
    eager, compiled = runs["eager"], runs["compiled"]
    turns = []
    for up, ours, comp in zip(eager["turns"], eager["turns"], compiled["turns"], strict=True):
        turns.append({"turn": up["turn"], "prompt_tokens": ours["ours"]["prompt_tokens"],
                      "ttft": {"upstream": up["upstream"]["ttft"], "eager": ours["ours"]["ttft"],
                               "compiled": comp["ours"]["ttft"]},
                      "decode_tps": {"upstream": up["upstream"]["decode_tps"], "eager": ours["ours"]["decode_tps"],
                                     "compiled": comp["ours"]["decode_tps"]},
                      "same_answer_eager_compiled": ours["ours"].get("token_ids") == comp["ours"].get("token_ids")})
    decode = {way: statistics.median(t["decode_tps"][way] for t in turns) for way in ("upstream", "eager", "compiled")}
    figures = {
        "decode_tps_median": decode,
        "decode_compiled_over_upstream": decode["compiled"] / decode["upstream"],
        "decode_compiled_tps": decode["compiled"],
        "ttft_last_over_turn2": (turns[-1]["ttft"]["compiled"] / turns[1]["ttft"]["compiled"]
                                 if len(turns) > 1 else None),
        "compile_warm_up_s": compiled["compile"]["warm_up_seconds"],
        "compile_used": compiled["compile"]["used"], "compile_note": compiled["compile"]["note"],
        "peak_gib": {"upstream": eager["summary"]["peak_memory_gib"]["upstream"],
                     "eager": eager["summary"]["peak_memory_gib"]["ours"],
                     "compiled": compiled["summary"]["peak_memory_gib"]["ours"]},
        "turns_same_answer_eager_compiled": sum(t["same_answer_eager_compiled"] for t in turns),
    }
    return {"ok": True, "model": str(model), "dtype": dtype, "turns": turns, "figures": figures,
            "load_seconds": {"eager": eager["load_seconds"], "compiled": compiled["load_seconds"]}}


def run_big(device: str, dry_run: bool, work: Path, quantize: str = "none") -> dict[str, Any]:
    """The 7B (hybrid) architecture in bf16 with random weights: two turns with an image, peak GPU memory.

    With ``quantize`` its language model in int8 or int4: figures named ``big_<mode>_...``.
    """
    import numpy as np
    from PIL import Image

    import engine
    from dsvl_tui.bench.engine import peak_memory, reset_peak_memory
    from engine.testing.random_checkpoints import random_engine

    size = "tiny" if dry_run else "full"
    reset_peak_memory(device)
    started = time.perf_counter()
    eng = random_engine(work / f"random-7b-{size}", tower="hybrid", size=size, device=device, dtype="bfloat16",
                        quantize=quantize)
    build_seconds = time.perf_counter() - started
    picture = Image.fromarray(np.random.default_rng(3).integers(0, 256, (768, 1024, 3), dtype=np.uint8))
    settings = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=16, ignore_eos=True)
    history = [engine.Message("user", "Describe this picture in detail.", images=[picture])]
    turns = []
    for question in ("And what colours stand out?", None):
        stream = eng.stream(history, settings, cache_key="big")
        history.append(engine.Message("assistant", "".join(stream)))
        stats = stream.stats
        turns.append({"prompt_tokens": stats.prompt_tokens, "reused_tokens": stats.reused_tokens,
                      "ttft": stats.time_to_first_token, "decode_tps": stats.tokens_per_second,
                      "new_tokens": stats.new_tokens})
        if question:
            history.append(engine.Message("user", question))
    peak = peak_memory(eng.info.device)
    prefix = "big" if quantize == "none" else f"big_{quantize}"
    figures = {f"{prefix}_parameters": eng.info.parameters, f"{prefix}_build_seconds": build_seconds,
               f"{prefix}_peak_gib": peak / GIB if eng.info.device.startswith("cuda") else None,
               f"{prefix}_decode_tps": statistics.median(t["decode_tps"] or 0.0 for t in turns)}
    if quantize != "none":
        figures[f"{prefix}_effective"] = eng.info.quantize
        figures[f"{prefix}_note"] = eng.info.quantize_note
    del eng
    _free_gpu()
    return {"ok": all(t["new_tokens"] == settings.max_new_tokens for t in turns), "size": size, "turns": turns,
            "figures": figures}


def torchao_state() -> dict[str, Any]:
    """torchao as this check finds it: its version and folder, or the problem that keeps it from this torch.

    Installed and fitting but failing to import raises (a real failure: the wheels did not install right).
    """
    import importlib.util

    from engine.quantize import torchao_mismatch

    if importlib.util.find_spec("torchao") is None:
        return {"version": None, "problem": "torchao is not installed; scripts/gpu-wheels brings it"}
    mismatch = torchao_mismatch()
    if mismatch:
        return {"version": None, "problem": mismatch}
    import torchao
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig  # noqa: F401 - what CUDA's modes use

    return {"version": torchao.__version__, "folder": str(Path(torchao.__file__).parent), "problem": None}


def run_quant(device: str, dry_run: bool, work: Path) -> dict[str, Any]:
    """``run_big`` with the 7B's language model in int8, then int4; ok only if both modes ran quantized.

    Skipped, not failed, where the device's kernels come from torchao and no torchao fits this torch.
    """
    import torch

    from engine.quantize import KERNELS

    torchao = torchao_state()
    if "torchao" in KERNELS.get(torch.device(device).type, {}).get("int8", ()) and torchao["problem"]:
        return {"ok": True, "skipped": True, "summary": f"skipped: no torchao for this torch ({torchao['problem']})",
                "figures": {"torchao": torchao}}
    runs = {mode: run_big(device, dry_run, work, quantize=mode) for mode in ("int8", "int4")}
    figures: dict[str, Any] = {"torchao": torchao}
    for outcome in runs.values():
        figures.update(outcome["figures"])
    quantized = all(figures[f"big_{mode}_effective"] == mode for mode in runs)
    notes = "; ".join(f"{mode}: {figures[f'big_{mode}_note']}" for mode in runs if figures[f"big_{mode}_note"])
    return {"ok": quantized and all(o["ok"] for o in runs.values()), "summary": notes,
            "turns": {mode: o["turns"] for mode, o in runs.items()}, "figures": figures}


def run_batch(device: str, dry_run: bool, work: Path) -> dict[str, Any]:
    """Aggregate decode tok/s of 1, 4, 16 and 32 concurrent streams on one batching engine (the 1.3B, bf16)."""
    import engine
    from dsvl_tui.bench.batch import run_streams
    from dsvl_tui.bench.engine import peak_memory, reset_peak_memory
    from engine.testing.random_checkpoints import random_engine

    size = "tiny" if dry_run else "full"
    reset_peak_memory(device)
    eng = random_engine(work / f"random-1.3b-{size}", tower="siglip", size=size, device=device, dtype="bfloat16",
                        max_batch=max(BATCH_STREAMS))
    settings = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, ignore_eos=True,
                                         max_new_tokens=8 if dry_run else BATCH_NEW_TOKENS)
    run_streams(eng, ["Warm up."], settings)
    rows = []
    for count in BATCH_STREAMS:
        measured = run_streams(eng, [f"Question {n} of {count}: tell me a story." for n in range(count)], settings)
        rows.append({"streams": count, "aggregate_tok_s": measured["aggregate_tok_s"],
                     "per_stream_tok_s": measured["per_stream_tok_s"], "ttft_s": measured["ttft_s"]})
    alone = rows[0]["aggregate_tok_s"]
    for row in rows:
        row["over_1"] = row["aggregate_tok_s"] / max(alone, 1e-9)
    figures: dict[str, Any] = {f"batch_{row['streams']}_tps": row["aggregate_tok_s"] for row in rows}
    figures["batch_16_over_1"] = next(row["over_1"] for row in rows if row["streams"] == 16)
    figures["batch_peak_gib"] = peak_memory(device) / GIB
    figures["batch_compile_note"] = "batches decode eagerly (no CUDA graphs for batch sizes)"
    del eng
    _free_gpu()
    return {"ok": True, "rows": rows, "figures": figures, "new_tokens": settings.max_new_tokens,
            "summary": f"16 streams: {figures['batch_16_over_1']:.1f}x one stream"}


def _free_gpu() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


# -- the table ---------------------------------------------------------------------------------------------------

def judge(figures: dict[str, Any], dry_run: bool) -> list[dict[str, Any]]:
    rows = []
    for key, what, how, limit in TARGETS:
        value = figures.get(key)
        if dry_run or value is None:
            verdict = "-"
        else:
            verdict = "PASS" if {">=": value >= limit, "<=": value <= limit, "<": value < limit}[how] else "FAIL"
        rows.append({"target": key, "what": what, "measured": value, "limit": f"{how} {limit:g}", "verdict": verdict})
    return rows


def print_table(result: dict[str, Any]) -> None:
    dry = result["dry_run"]
    print(f"gpucheck{' --dry-run (CPU, tiny checkpoints: figures mean nothing)' if dry else ''} "
          f"| {result['machine']} | torch {result['torch']} | {result['seconds']:.0f} s")
    for part, outcome in result["parts"].items():
        state = ("skipped" if outcome.get("skipped") else "ok") if outcome.get("ok") else "FAILED"
        extra = outcome.get("summary") or outcome.get("error") or ""
        print(f"  part {part:<6} {state:<6} {outcome.get('seconds', 0):6.1f} s  {extra}")
    bench = result["parts"].get("bench", {})
    if bench.get("turns"):
        print(f"  {'turn':>4} {'prompt':>6} | {'TTFT s: upstream':>16} {'eager':>7} {'compiled':>8} | "
              f"{'tok/s: upstream':>15} {'eager':>7} {'compiled':>8} | same answer")
        for t in bench["turns"]:
            ttft, tps = t["ttft"], t["decode_tps"]
            print(f"  {t['turn']:>4} {t['prompt_tokens']:>6} | {ttft['upstream']:>16.3f} {ttft['eager']:>7.3f} "
                  f"{ttft['compiled']:>8.3f} | {tps['upstream']:>15.1f} {tps['eager']:>7.1f} {tps['compiled']:>8.1f} | "
                  f"{'yes' if t['same_answer_eager_compiled'] else 'no'}")
        f = bench["figures"]
        print(f"  peak GPU GiB: upstream {f['peak_gib']['upstream']:.2f}, eager {f['peak_gib']['eager']:.2f}, "
              f"compiled {f['peak_gib']['compiled']:.2f} | compile used: {f['compile_used']}"
              + (f" ({f['compile_note']})" if f["compile_note"] else ""))
    seven_b = {**result["parts"].get("big", {}).get("figures", {}),
               **result["parts"].get("quant", {}).get("figures", {})}
    by_mode = [(label, seven_b.get(f"{prefix}_decode_tps"), seven_b.get(f"{prefix}_peak_gib"))
             for label, prefix in (("bf16", "big"), ("int8", "big_int8"), ("int4", "big_int4"))]
    if any(tps is not None for _, tps, _ in by_mode):
        print("  7B decode tok/s (peak GPU GiB): " + ", ".join(
            f"{label} {tps:.1f}" + (f" ({peak:.2f})" if peak is not None else "")
            for label, tps, peak in by_mode if tps is not None))
    torchao = seven_b.get("torchao")
    if torchao:
        print(f"  torchao: {torchao['version']} from {torchao['folder']}" if torchao["version"] else
              f"  torchao: none for this torch ({torchao['problem']})")
    batch = result["parts"].get("batch", {})
    if batch.get("rows"):
        print(f"  1.3B bf16 batched decode ({batch['new_tokens']} tokens a stream, max_batch 32, eager):")
        print(f"  {'streams':>7} | {'aggregate tok/s':>15} {'x 1 stream':>10} | {'per stream tok/s':>16} {'TTFT s':>7}")
        for row in batch["rows"]:
            target = "  (target >= 8x)" if row["streams"] == 16 else ""
            print(f"  {row['streams']:>7} | {row['aggregate_tok_s']:>15.1f} {row['over_1']:>9.2f}x | "
                  f"{row['per_stream_tok_s']:>16.1f} {row['ttft_s']:>7.3f}{target}")
    tests = result["parts"].get("tests", {}).get("figures", {})
    for key, value in tests.items():
        print(f"  test figure {key}: {json.dumps(value)}")
    print(f"  {'target':<48} {'measured':>10} {'limit':>9}  verdict")
    for row in result["targets"]:
        value = row["measured"]
        shown = "-" if value is None else f"{value:.2f}"
        print(f"  {row['what']:<48} {shown:>10} {row['limit']:>9}  {row['verdict']}")


def _result(dry_run: bool, device: str, outcomes: dict[str, dict[str, Any]], started: float, done: bool
            ) -> dict[str, Any]:
    import torch

    figures: dict[str, Any] = {}
    for outcome in outcomes.values():
        figures.update(outcome.get("figures", {}))
    return {"dry_run": dry_run, "machine": _device_name(device), "torch": torch.__version__,
            "python": platform.python_version(), "parts": outcomes, "targets": judge(figures, dry_run),
            "seconds": time.perf_counter() - started, "finished": done}


# -- main --------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU with tiny checkpoints (CI)")
    for part in PARTS:
        parser.add_argument(f"--{part}", action="store_true", help=f"run the {part} part (none named: all parts)")
    parser.add_argument("--json", type=Path, default=Path("gpucheck.json"), help="where to write the results")
    parser.add_argument("--work", type=Path, default=WORK, help="folder for checkpoints and partial results")
    args = parser.parse_args(argv)
    parts = [p for p in PARTS if getattr(args, p)] or list(PARTS)

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA GPU here (torch.cuda.is_available() is False); use --dry-run to check the script",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    device = "cpu" if args.dry_run else "cuda"
    args.work.mkdir(parents=True, exist_ok=True)
    from engine.testing.random_checkpoints import write_checkpoint

    tiny = args.work / "tiny-siglip"
    if not (tiny / "model.safetensors").exists():
        write_checkpoint(tiny, tower="siglip", size="tiny", seed=7)
    full = None
    if not args.dry_run and ("tests" in parts or "bench" in parts):
        from dsvl_tui.bench.engine import random_checkpoint

        written = time.perf_counter()
        full = random_checkpoint(None)  # the full-size random 1.3B, written once (bf16, like upstream's files)
        print(f"gpucheck: the full-size random 1.3B checkpoint ready in {time.perf_counter() - written:.0f} s",
              file=sys.stderr)
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "tests": lambda: run_tests(tiny, full, args.dry_run, args.work),
        "bench": lambda: run_bench(full or tiny, device, "float32" if args.dry_run else "bfloat16", args.dry_run,
                                   args.work),
        "big": lambda: run_big(device, args.dry_run, args.work),
        "quant": lambda: run_quant(device, args.dry_run, args.work),
        "batch": lambda: run_batch(device, args.dry_run, args.work),
    }
    from dsvl_tui.core.text import error_line
    from dsvl_tui.storage.atomic import atomic_write_bytes

    outcomes: dict[str, dict[str, Any]] = {}
    for part in parts:
        part_started = time.perf_counter()
        print(f"gpucheck: {part}...", file=sys.stderr)
        try:
            outcomes[part] = steps[part]()
        except Exception as exc:  # noqa: BLE001 - one failed part must not cost the others' figures
            traceback.print_exc()
            outcomes[part] = {"ok": False, "error": error_line(exc)}
        outcomes[part]["seconds"] = time.perf_counter() - part_started
        print(f"gpucheck: {part} {'ok' if outcomes[part]['ok'] else 'FAILED'} in {outcomes[part]['seconds']:.0f} s",
              file=sys.stderr)
        result = _result(args.dry_run, device, outcomes, started, done=part == parts[-1])
        # Written after every part (atomically: a kill mid-write leaves the last whole file), so a run stopped at its
        # time limit still leaves the parts it finished.
        atomic_write_bytes(args.json, json.dumps(result, indent=2, default=str).encode())
    print_table(result)
    print(f"wrote {args.json}", file=sys.stderr)
    return 0 if all(o.get("ok") for o in outcomes.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
