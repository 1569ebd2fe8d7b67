"""What the HTTP server costs: the same chat in-process and through ``dsvl-chat serve``, side by side.

The real server, ``dsvl-chat serve``, runs in a process of its own on a
loopback port, as users run it (``--server thread`` instead serves this
process's engine from a thread: half the memory); the in-process chat calls
``engine.stream`` and the HTTP chat goes through ``RemoteBackend``, the
client every front end uses with ``--endpoint``. Both chats have the same
turns (pictures in turns 1 and 5, PNG files as ``/image`` attaches them,
forced answer lengths). With the server in its own process they are the
very same chat (its engine has its own caches), so both answers are the
same tokens; with ``--server thread`` they differ in system prompt and
pictures, so neither reuses the other's context or image features. Each
turn the two take turns at going first. Both are timed the same way, on the client's
side: time to the first token (the first text chunk, less the decode steps
of the tokens before it that gave no text yet: a random checkpoint's answer
often starts with bytes of no whole character), and decode time per token
after it.

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
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsvl_tui.web.launcher import free_port

if TYPE_CHECKING:
    from engine.types import ChatBackend, ImageSource

QUESTIONS = [
    "Describe this picture.", "What colours stand out?", "Write a short poem about it.",
    "Summarise our chat so far.", "And this second picture?", "Compare the two pictures.",
    "Which one would you hang on a wall?", "Give each picture a title.",
]
IMAGE_TURNS = {0: 1, 4: 2}  # turn index -> picture seed (the HTTP chat's pictures: seed + 100)
TARGET_TTFT_MS = 50.0
TARGET_DECODE_PCT = 5.0


class ServerThread:
    """``dsvl_tui.serve``'s app in uvicorn on a loopback port, in a thread of this process."""

    def __init__(self, backend: Any) -> None:
        import uvicorn

        from dsvl_tui.serve.app import create_app

        self.port = free_port()
        self.key: str | None = None  # an app made here, for this bench alone: no key
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


class ServerProcess:
    """``dsvl-chat serve`` in a process of its own, as a user runs it; its own copy of the model."""

    def __init__(self, model: str, *, device: str, dtype: str) -> None:
        self.port = free_port()
        self.key = secrets.token_urlsafe(32)  # serve would make one and print it; the bench gives its own
        self.command = [sys.executable, "-c", "from dsvl_tui.cli import main; main()", "serve", "--model", model,
                        "--device", device, "--dtype", dtype, "--port", str(self.port)]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        import httpx

        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                        env={**os.environ, "DSVL_SERVE_API_KEY": self.key})
        deadline = time.monotonic() + 600  # the full-size model loads in a minute or two on a CPU
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"dsvl-chat serve exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("dsvl-chat serve did not start in 10 minutes")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)

    def __exit__(self, *exc: object) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """End a server the bench started: terminate, then kill after 30 s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


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


def picture_file(folder: Path, seed: int) -> Path:
    from dsvl_tui.bench.engine import random_picture

    path = folder / f"picture-{seed}.png"
    if not path.exists():
        random_picture(seed).save(path)
    return path


def turn(backend: Any, history: list, settings: Any, system: str) -> dict[str, Any]:
    started = time.perf_counter()
    stream = backend.stream(history, settings, system=system)
    text, first_text, end = timed(stream, started)
    return {"text": text, "first_text": first_text, "end": end, "new_tokens": stream.stats.new_tokens,
            "prompt_tokens": stream.stats.prompt_tokens, "token_ids": getattr(stream, "token_ids", None),
            "reused_tokens": getattr(stream.stats, "reused_tokens", None)}


def held_tokens(eng: Any, token_ids: list[int]) -> int:
    """How many of an answer's first tokens gave no text yet (bytes of an unfinished character, which a
    random checkpoint makes often): the first text chunk comes that many decode steps after the first token."""
    from engine.detokenize import IncrementalDecoder

    decoder = IncrementalDecoder(eng.prompt_format.decode)
    for index, token in enumerate(token_ids):
        if decoder.push(token):
            return index
    return len(token_ids)


def first_token_timing(result: dict[str, Any], held: int) -> None:
    """Time to the first token and decode time per token, from the client's chunk times and ``held``.

    Both ways decode the very same tokens, so the same ``held`` steps separate the first token from the
    first chunk; each way takes them off at its own measured decode rate.
    """
    steps = max(result["new_tokens"] - 1 - held, 1)  # decode steps between the first chunk and the last
    result["decode_s_per_token"] = (result["end"] - result["first_text"]) / steps
    result["ttft"] = result["first_text"] - held * result["decode_s_per_token"]
    result["held_tokens"] = held


def run(model: str, *, device: str, dtype: str, turns: int, new_tokens: int,
        server: str = "process") -> dict[str, Any]:
    import engine
    from dsvl_tui.backends.remote import RemoteBackend

    eng = engine.load(model, device=device, dtype=dtype)
    pictures = Path(tempfile.mkdtemp(prefix="dsvl-bench-serve-"))  # files, as /image attaches them
    settings = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=new_tokens,
                                         ignore_eos=True)
    # A server in its own process has its own engine and caches, so both chats can be the very same chat:
    # the same greedy answers, hence the same tokens before the first visible text (a random checkpoint's
    # first tokens are often bytes of no whole character, which delay the first chunk). A server in a
    # thread shares this engine, so there the chats differ, lest one reuse the other's context.
    same = server == "process"
    systems = {"local": "You are a helpful assistant.", "http": "You are a helpful assistant."} if same else \
        {"local": "You are a helpful assistant (chat A).", "http": "You are a helpful assistant (chat B)."}
    histories: dict[str, list] = {"local": [], "http": []}
    rows = []
    serving = ServerProcess(model, device=device, dtype=dtype) if server == "process" else ServerThread(eng)
    with serving:
        remote = RemoteBackend(f"http://127.0.0.1:{serving.port}", api_key=serving.key)
        backends: dict[str, ChatBackend] = {"local": eng, "http": remote}
        for index in range(turns):
            row: dict[str, Any] = {"turn": index + 1}
            order = ["local", "http"] if index % 2 == 0 else ["http", "local"]
            for way in order:
                history = histories[way]
                seed = IMAGE_TURNS.get(index)
                images: list[ImageSource] = [] if seed is None else [
                    picture_file(pictures, seed + (100 if way == "http" and not same else 0))]
                history.append(engine.Message("user", QUESTIONS[index % len(QUESTIONS)], images=images))
                result = turn(backends[way], history, settings, systems[way])
                history.append(engine.Message("assistant", result.pop("text")))
                row[way] = result
            row["same_answer"] = histories["local"][-1].text == histories["http"][-1].text
            held = held_tokens(eng, row["local"].pop("token_ids"))
            row["http"].pop("token_ids")
            for way in order:  # a thread server's chat is another chat: its held tokens are unknown, taken as 0
                first_token_timing(row[way], held if way == "local" or row["same_answer"] else 0)
            rows.append(row)
            print(f"turn {index + 1}: local ttft {row['local']['ttft']:.3f} s, http ttft {row['http']['ttft']:.3f} s",
                  file=sys.stderr)
    return {"model": model, "device": eng.info.device, "dtype": eng.info.dtype, "new_tokens": new_tokens,
            "server": server,
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
             f"forced {result['new_tokens']} new tokens per turn | server in a {result.get('server', 'thread')}",
             "turn  prompt  reused  held | ttft local s  ttft http s  +ms | ms/token local  ms/token http    +%"]
    for r in result["turns"]:
        local, http = r["local"], r["http"]
        lines.append(
            f"{r['turn']:>4} {local['prompt_tokens']:>7} {local['reused_tokens'] or 0:>7} {local['held_tokens']:>5} | "
            f"{local['ttft']:>12.3f} {http['ttft']:>12.3f} {1000 * (http['ttft'] - local['ttft']):>5.0f} | "
            f"{1000 * local['decode_s_per_token']:>14.2f} {1000 * http['decode_s_per_token']:>14.2f} "
            f"{100 * (http['decode_s_per_token'] / local['decode_s_per_token'] - 1):>5.1f}")
    ttft, decode = figures["ttft_added_ms_median"], figures["decode_added_pct_median"]
    lines.append(f"HTTP adds {ttft:.1f} ms to the time to first token (median; target <= {TARGET_TTFT_MS:.0f}: "
                 f"{'PASS' if ttft <= TARGET_TTFT_MS else 'FAIL'}) and {decode:.1f} % to decode time per token "
                 f"(median; target <= {TARGET_DECODE_PCT:.0f}: {'PASS' if decode <= TARGET_DECODE_PCT else 'FAIL'})")
    if result.get("server") == "process":
        same = sum(bool(r.get("same_answer")) for r in result["turns"])
        lines.append(f"the same chat both ways: {same} of {len(result['turns'])} answers identical (greedy)")
    if "http_ttft_last_over_turn2" in figures:
        lines.append(f"prefix reuse through the API: last turn's TTFT / turn 2's = "
                     f"{figures['http_ttft_last_over_turn2']:.2f}x "
                     f"(in-process {figures['local_ttft_last_over_turn2']:.2f}x)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsvl_tui.bench.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model",
                        help="hub id or folder (default: the full-size random 1.3B checkpoint, written once)")
    parser.add_argument("--layers", type=int, help="a random 1.3B checkpoint with only N language-model layers")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--server", choices=["process", "thread"], default="process",
                        help="run dsvl-chat serve in its own process, as users do (default), or in a thread "
                             "of this one sharing the in-process engine (half the memory, but the server, the "
                             "client and the engine share one interpreter lock)")
    parser.add_argument("--json", type=Path, default=Path("bench-serve.json"))
    args = parser.parse_args(argv)
    from dsvl_tui.bench.engine import random_checkpoint

    model = args.model or str(random_checkpoint(args.layers))
    result = run(model, device=args.device, dtype=args.dtype, turns=args.turns, new_tokens=args.new_tokens,
                 server=args.server)
    figures = summary(result)
    print(report(result, figures))
    args.json.write_text(json.dumps({**result, "summary": figures}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
