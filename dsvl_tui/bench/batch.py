"""Benchmark: batched decoding against one answer at a time: ``python -m dsvl_tui.bench.batch``.

One engine per weight mode (fp32, int8), the same run: for 1, 4 and 8
concurrent streams (threads calling ``Engine.stream``, as serve's requests
do), first with ``max_batch`` 1 (today's path: the streams take turns),
then batched. Each stream gets its own short question (so only the system
prompt is shared) and a forced answer length, greedily. Then the time to
first token of a request that arrives while 4 answers decode, against the
same request on an idle engine. Prints a side-by-side table with ratios
and writes JSON (``batchbench.json``).

Numbers:
- aggregate tok/s: every stream's tokens after its first, over the time
  from the earliest first token to the last answer's end (prefill of the
  short prompts is left out as far as it comes first; the prefills of
  later arrivals fall inside it);
- all-decoding tok/s: the tokens every stream produced while all of them
  were decoding (from the last first token to the first answer's end: the
  steady state a busy server runs in, no prefill inside), over that time;
  with ``max_batch`` 1 there is no such window (the streams take turns);
- per stream tok/s: each stream's own decode rate (``stats.tokens_per_second``), the mean;
- peak RSS: the process's, while the 8 batched streams ran;
- KV bytes per token: keys and values of every layer for one position.
"""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from pathlib import Path
from typing import Any

from dsvl_tui.bench.engine import PeakRss, random_checkpoint

STREAMS = (1, 4, 8)
ARRIVING = ("Here is a longer request that arrives while others decode. " * 12).strip()


def run_streams(eng, questions: list[str], settings) -> dict[str, Any]:
    """Stream every question at once from threads of their own; aggregate and per-stream numbers."""
    import engine

    streams = [eng.stream([engine.Message("user", q)], settings) for q in questions]
    ends: list[float] = [0.0] * len(streams)
    # (when, tokens so far) at every chunk: the runner appends a token's id before it emits its text.
    seen: list[list[tuple[float, int]]] = [[] for _ in streams]
    together = threading.Barrier(len(streams))  # every thread asks at once, however late the machine starts it

    def consume(index: int) -> None:
        stream = streams[index]
        together.wait()
        for _ in stream:
            seen[index].append((time.perf_counter(), len(stream.token_ids)))
        ends[index] = time.perf_counter()

    started = time.perf_counter()
    threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(streams))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    firsts = [started + (s.stats.time_to_first_token or 0.0) for s in streams]
    decoded = sum(max(s.stats.new_tokens - 1, 0) for s in streams)
    rates = [s.stats.tokens_per_second or 0.0 for s in streams]
    return {
        "aggregate_tok_s": decoded / max(max(ends) - min(firsts), 1e-9),
        **all_decoding(seen),
        "per_stream_tok_s": sum(rates) / len(rates),
        "ttft_s": sum(s.stats.time_to_first_token or 0.0 for s in streams) / len(streams),
        "wall_s": max(ends) - started,
    }


def all_decoding(seen: list[list[tuple[float, int]]]) -> dict[str, float | None]:
    """Tokens per second over the window in which every stream was decoding (None where there is none)."""
    if not all(seen):
        return {"all_decoding_tok_s": None, "all_decoding_s": 0.0}
    start = max(samples[0][0] for samples in seen)  # the last stream's first token
    stop = min(samples[-1][0] for samples in seen)  # the first stream's last token
    if stop <= start:
        return {"all_decoding_tok_s": None, "all_decoding_s": 0.0}
    tokens = 0
    for samples in seen:
        at_start = max(count for when, count in samples if when <= start)
        at_stop = max(count for when, count in samples if when <= stop)
        tokens += at_stop - at_start
    return {"all_decoding_tok_s": tokens / (stop - start), "all_decoding_s": stop - start}


def _arrival_ttft(eng, settings, long_settings, tag: str) -> dict[str, float]:
    """TTFT of ARRIVING alone (idle engine), then while 4 long answers decode (they are cancelled after)."""
    import engine

    # Each its own words from the first one on: no kept context shares more than the system prompt with it.
    alone = eng.stream([engine.Message("user", f"Alone, {tag}: {ARRIVING}")], settings)
    for _ in alone:
        pass
    running = [eng.stream([engine.Message("user", f"Keep talking {tag} {n}.")], long_settings) for n in range(4)]
    flowing = [threading.Event() for _ in running]

    def consume(index: int) -> None:
        for _ in running[index]:
            flowing[index].set()

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(running))]
    for thread in threads:
        thread.start()
    for event in flowing:
        event.wait()
    late = eng.stream([engine.Message("user", f"Meanwhile, {tag}: {ARRIVING}")], settings)
    for _ in late:
        pass
    for stream in running:
        stream.cancel.set()
    for thread in threads:
        thread.join()
    return {"alone_s": alone.stats.time_to_first_token or 0.0, "while_4_s": late.stats.time_to_first_token or 0.0,
            "prompt_tokens": late.stats.prompt_tokens, "reused_tokens": late.stats.reused_tokens,
            "alone_reused_tokens": alone.stats.reused_tokens}


def bench_mode(model: str, quantize: str, args) -> dict[str, Any]:
    import engine
    from engine.static_decode import static_cache_bytes

    eng = engine.load(model, device=args.device, dtype="float32", quantize=quantize, max_batch=args.max_batch)
    settings = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=args.new_tokens,
                                         ignore_eos=True)
    long_settings = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=100_000,
                                              ignore_eos=True)
    run_streams(eng, ["Warm up."], settings)
    rows: dict[str, Any] = {}
    peak = 0
    for count in STREAMS:
        row = {}
        for max_batch in (1, args.max_batch):
            eng.set_max_batch(max_batch)
            questions = [f"Question {n} of {count} (max-batch {max_batch}): tell me a story." for n in range(count)]
            if count == max(STREAMS) and max_batch > 1:
                with PeakRss() as rss:
                    row[f"max_batch_{max_batch}"] = run_streams(eng, questions, settings)
                peak = rss.peak
            else:
                row[f"max_batch_{max_batch}"] = run_streams(eng, questions, settings)
        rows[str(count)] = row
    eng.set_max_batch(args.max_batch)
    ttft = _arrival_ttft(eng, settings, long_settings, quantize)
    config = eng.model.language_model.config
    # Keys and values of every layer for one position, in the activations' dtype (int8 quantizes weights only).
    kv_per_token = static_cache_bytes(config, 1, eng.model.dtype)
    return {"quantize": eng.info.quantize, "streams": rows, "arrival_ttft": ttft, "peak_rss_bytes": peak,
            "kv_bytes_per_token": kv_per_token, "layers": config.num_hidden_layers}


def _figure(value: float | None, width: int, suffix: str = "") -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width - len(suffix)}.2f}{suffix}"


def table(result: dict[str, Any], max_batch: int) -> str:
    lines = []
    for mode in result["modes"]:
        rows = mode["streams"]
        one = rows["1"]["max_batch_1"]["aggregate_tok_s"]
        alone_stream = rows["1"]["max_batch_1"]["per_stream_tok_s"]
        lines.append(f"{mode['quantize']} ({mode['layers']} layers), tok/s; 'all decoding': while every stream decodes")
        lines.append(f"{'streams':>7} | {'max-batch 1':>11} | {f'max-batch {max_batch}':>11} | {'ratio':>6} | "
                     f"{'vs 1 stream':>11} | {'all decoding':>12} | {'vs 1 stream':>11} | {'per stream':>10} | "
                     f"{'vs alone':>8}")
        for count, row in rows.items():
            base, ours = row["max_batch_1"], row[f"max_batch_{max_batch}"]
            steady = ours.get("all_decoding_tok_s")
            lines.append(f"{count:>7} | {base['aggregate_tok_s']:>11.2f} | {ours['aggregate_tok_s']:>11.2f} | "
                         f"{ours['aggregate_tok_s'] / max(base['aggregate_tok_s'], 1e-9):>5.2f}x | "
                         f"{ours['aggregate_tok_s'] / max(one, 1e-9):>10.2f}x | {_figure(steady, 12)} | "
                         f"{_figure(None if steady is None else steady / max(one, 1e-9), 11, 'x')} | "
                         f"{ours['per_stream_tok_s']:>10.2f} | "
                         f"{ours['per_stream_tok_s'] / max(alone_stream, 1e-9):>7.2f}x")
        ttft = mode["arrival_ttft"]
        lines.append(f"TTFT of a {ttft['prompt_tokens']}-token prompt arriving while 4 decode: "
                     f"{ttft['while_4_s']:.2f} s "
                     f"({ttft['reused_tokens']} positions reused); alone {ttft['alone_s']:.2f} s "
                     f"({ttft['alone_reused_tokens']} reused) "
                     f"({ttft['while_4_s'] / max(ttft['alone_s'], 1e-9):.2f}x)")
        lines.append(f"peak RSS with {max(STREAMS)} streams: {mode['peak_rss_bytes'] / 2**30:.2f} GiB; "
                     f"KV bytes per token: {mode['kv_bytes_per_token']:,}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsvl_tui.bench.batch", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="hub id or folder (default: a random full-size 1.3B checkpoint, written once)")
    parser.add_argument("--layers", type=int, help="use a random 1.3B checkpoint with only N language-model layers")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--new-tokens", type=int, default=32, help="forced answer length per stream (default: 32)")
    parser.add_argument("--max-batch", type=int, default=8, help="the batched side's max_batch (default: 8)")
    parser.add_argument("--quantize", default="none,int8", help="weight modes, comma-separated (default: none,int8)")
    parser.add_argument("--output", default="batchbench.json")
    args = parser.parse_args(argv)
    model = args.model or str(random_checkpoint(args.layers))
    result = {"model": model, "device": args.device, "new_tokens": args.new_tokens, "max_batch": args.max_batch,
              "machine": platform.platform(), "modes": []}
    for quantize in args.quantize.split(","):
        result["modes"].append(bench_mode(model, quantize.strip(), args))
    print(table(result, args.max_batch))
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
