"""What the HTTP server costs: the same chat in-process and through ``dsvl-chat serve``, side by side.

One engine is loaded once and served by the real server (``dsvl_tui.serve``,
uvicorn on a loopback port, in this process); the in-process chat calls
``engine.stream`` and the HTTP chat goes through ``RemoteBackend``, the
client every front end uses with ``--endpoint``. Both chats have the same
turns (pictures in turns 1 and 5, forced answer lengths) but different
system prompts and different pictures of the same size, so neither reuses
the other's context or image features; each turn the two take turns at
going first. Both are timed the same way, on the client's
side: time to the first text chunk, and decode time per token after it.

The summary gives what HTTP adds to the time to first token (median over
turns, in ms), how much it adds to the decode time per token (median, %),
and, through the API, the last turn's time to first token over turn 2's
(the prefix cache finding a stateless request's conversation).

    python -m dsvl_tui.bench.serve                 # the full-size random 1.3B checkpoint
    python -m dsvl_tui.bench.serve --layers 2      # a quick run on a shallow one
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.types import ChatBackend

QUESTIONS = [
    "Describe this picture.", "What colours stand out?", "Write a short poem about it.",
    "Summarise our chat so far.", "And this second picture?", "Compare the two pictures.",
    "Which one would you hang on a wall?", "Give each picture a title.",
]
IMAGE_TURNS = {0: 1, 4: 2}  # turn index -> picture seed (the HTTP chat's pictures: seed + 100)
TARGET_TTFT_MS = 50.0
TARGET_DECODE_PCT = 5.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerThread:
    """``dsvl_tui.serve``'s app in uvicorn on a loopback port, in a thread of this process."""

    def __init__(self, backend: Any) -> None:
        import uvicorn

        from dsvl_tui.serve.app import create_app

        self.port = free_port()
        config = uvicorn.Config(create_app(backend), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="bench-server", daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def timed(stream: Iterable[str], started: float) -> tuple[str, float, float]:
    """(text, time to the first chunk, time of the last chunk), from ``started``."""
    first = last = None
    parts = []
    for chunk in stream:
        now = time.perf_counter()
        first = now if first is None else first
        last = now
        parts.append(chunk)
    if first is None or last is None:
        raise RuntimeError("the answer was empty")
    return "".join(parts), first - started, last - started


def turn(backend: Any, history: list, settings: Any, system: str) -> dict[str, Any]:
    started = time.perf_counter()
    stream = backend.stream(history, settings, system=system)
    text, ttft, end = timed(stream, started)
    tokens = stream.stats.new_tokens
    return {"text": text, "ttft": ttft, "decode_s_per_token": (end - ttft) / max(tokens - 1, 1),
            "new_tokens": tokens, "prompt_tokens": stream.stats.prompt_tokens,
            "reused_tokens": getattr(stream.stats, "reused_tokens", None)}


def run(model: str, *, device: str, dtype: str, turns: int, new_tokens: int) -> dict[str, Any]:
    import engine
    from dsvl_tui.bench.engine import random_picture
    from dsvl_tui.remote import RemoteBackend

    eng = engine.load(model, device=device, dtype=dtype)
    settings = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=new_tokens,
                                         ignore_eos=True)
    systems = {"local": "You are a helpful assistant (chat A).", "http": "You are a helpful assistant (chat B)."}
    histories: dict[str, list] = {"local": [], "http": []}
    rows = []
    with ServerThread(eng) as server:
        backends: dict[str, ChatBackend] = {"local": eng, "http": RemoteBackend(f"http://127.0.0.1:{server.port}")}
        for index in range(turns):
            row: dict[str, Any] = {"turn": index + 1}
            order = ["local", "http"] if index % 2 == 0 else ["http", "local"]
            for way in order:
                history = histories[way]
                seed = IMAGE_TURNS.get(index)
                images = [] if seed is None else [random_picture(seed + (100 if way == "http" else 0))]
                history.append(engine.Message("user", QUESTIONS[index % len(QUESTIONS)], images=images))
                result = turn(backends[way], history, settings, systems[way])
                history.append(engine.Message("assistant", result.pop("text")))
                row[way] = result
            rows.append(row)
            print(f"turn {index + 1}: local ttft {row['local']['ttft']:.3f} s, http ttft {row['http']['ttft']:.3f} s",
                  file=sys.stderr)
    return {"model": model, "device": eng.info.device, "dtype": eng.info.dtype, "new_tokens": new_tokens,
            "machine": f"{platform.processor() or platform.machine()}, {platform.system()}", "turns": rows}


def summary(result: dict[str, Any]) -> dict[str, float]:
    rows = result["turns"]
    added_ms = [1000 * (r["http"]["ttft"] - r["local"]["ttft"]) for r in rows]
    decode_pct = [100 * (r["http"]["decode_s_per_token"] / r["local"]["decode_s_per_token"] - 1) for r in rows]
    out = {"ttft_added_ms_median": statistics.median(added_ms),
           "decode_added_pct_median": statistics.median(decode_pct)}
    if len(rows) >= 3:
        out["http_ttft_last_over_turn2"] = rows[-1]["http"]["ttft"] / rows[1]["http"]["ttft"]
        out["local_ttft_last_over_turn2"] = rows[-1]["local"]["ttft"] / rows[1]["local"]["ttft"]
    return out


def report(result: dict[str, Any], figures: dict[str, float]) -> str:
    lines = [f"model {result['model']} | {result['device']} {result['dtype']} | {result['machine']} | "
             f"forced {result['new_tokens']} new tokens per turn",
             "turn  prompt  reused | ttft local s  ttft http s  +ms | ms/token local  ms/token http    +%"]
    for r in result["turns"]:
        local, http = r["local"], r["http"]
        lines.append(
            f"{r['turn']:>4} {local['prompt_tokens']:>7} {local['reused_tokens'] or 0:>7} | "
            f"{local['ttft']:>12.3f} {http['ttft']:>12.3f} {1000 * (http['ttft'] - local['ttft']):>5.0f} | "
            f"{1000 * local['decode_s_per_token']:>14.2f} {1000 * http['decode_s_per_token']:>14.2f} "
            f"{100 * (http['decode_s_per_token'] / local['decode_s_per_token'] - 1):>5.1f}")
    ttft, decode = figures["ttft_added_ms_median"], figures["decode_added_pct_median"]
    lines.append(f"HTTP adds {ttft:.1f} ms to the time to first token (median; target <= {TARGET_TTFT_MS:.0f}: "
                 f"{'PASS' if ttft <= TARGET_TTFT_MS else 'FAIL'}) and {decode:.1f} % to decode time per token "
                 f"(median; target <= {TARGET_DECODE_PCT:.0f}: {'PASS' if decode <= TARGET_DECODE_PCT else 'FAIL'})")
    if "http_ttft_last_over_turn2" in figures:
        lines.append(f"prefix reuse through the API: last turn's TTFT / turn 2's = "
                     f"{figures['http_ttft_last_over_turn2']:.2f}x (in-process {figures['local_ttft_last_over_turn2']:.2f}x)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsvl_tui.bench.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="hub id or folder (default: the full-size random 1.3B checkpoint, written once)")
    parser.add_argument("--layers", type=int, help="a random 1.3B checkpoint with only N language-model layers")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--json", type=Path, default=Path("bench-serve.json"))
    args = parser.parse_args(argv)
    from dsvl_tui.bench.engine import random_checkpoint

    model = args.model or str(random_checkpoint(args.layers))
    result = run(model, device=args.device, dtype=args.dtype, turns=args.turns, new_tokens=args.new_tokens)
    figures = summary(result)
    print(report(result, figures))
    args.json.write_text(json.dumps({**result, "summary": figures}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
