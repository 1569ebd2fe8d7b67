"""``dsvl-chat serve`` against ``transformers serve`` on a converted checkpoint.

Run: ``python -m dsvl_tui.bench.serve_converted``.

Both servers run the same folder in transformers' converted layout (by
default ``bench.converted``'s random 1.3B, ``--layers N`` for a shallower
one) in processes of their own on loopback ports, one after the other, and
the same OpenAI-style streaming client (plain HTTP, server-sent events)
runs the same chat against each: one client alone, then ``--clients``
clients at once, each with its own conversation (a picture in the first
turn, as a ``data:`` URL). Timed on the client's side: time to the first
text chunk and chunks per second after it (a chunk is a token for both
servers). ``transformers serve`` needs the ``openai`` and ``accelerate``
packages; ``--tf-path`` puts a folder holding them on its PYTHONPATH only.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from dsvl_tui.web.launcher import free_port

from .converted import converted_checkpoint
from .engine import random_picture
from .serve import stop_process

QUESTIONS = ["Describe this picture.", "What colours stand out?", "Write a short poem about it.", "Give it a title."]


def _data_url(seed: int) -> str:
    buffer = io.BytesIO()
    random_picture(seed).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class Server:
    def __init__(self, command: list[str], env: dict[str, str], port: int, key: str | None):
        self.command, self.env, self.port, self.key = command, env, port, key
        self.process: subprocess.Popen[bytes] | None = None
        # the server's stderr, for a failed start
        self.log = Path(tempfile.gettempdir()) / f"bench-serve-converted-{port}.log"

    def __enter__(self) -> Server:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[:4]} exited with {self.process.returncode}; its output: {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError("the server did not start in 15 minutes")

    def __exit__(self, *exc: object) -> None:
        stop_process(self.process)


def stream_turn(server: Server, model: str, messages: list, new_tokens: int) -> tuple[str, dict]:
    body = {"model": model, "messages": messages, "stream": True, "max_tokens": new_tokens, "temperature": 0}
    headers = {"Content-Type": "application/json"}
    if server.key:
        headers["Authorization"] = f"Bearer {server.key}"
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/v1/chat/completions",
                                     data=json.dumps(body).encode(), headers=headers)
    started = time.perf_counter()
    times: list[float] = []
    text = ""
    with urllib.request.urlopen(request, timeout=1800) as reply:
        for raw in reply:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            choices = chunk.get("choices") or [{}]
            piece = (choices[0].get("delta") or {}).get("content")
            if piece:
                times.append(time.perf_counter())
                text += piece
    if not times:
        return text, {"ttft": float("nan"), "tps": float("nan"), "chunks": 0}
    return text, {"ttft": times[0] - started, "tps": (len(times) - 1) / max(times[-1] - times[0], 1e-9),
                  "chunks": len(times)}


def chat(server: Server, model: str, turns: int, new_tokens: int, seed: int) -> list[dict]:
    messages: list[dict[str, Any]] = []
    rows = []
    for turn in range(turns):
        content: list[dict[str, Any]] = [{"type": "text", "text": QUESTIONS[turn % len(QUESTIONS)]}]
        if turn == 0:
            content.insert(0, {"type": "image_url", "image_url": {"url": _data_url(seed)}})
        messages.append({"role": "user", "content": content})
        answer, row = stream_turn(server, model, messages, new_tokens)
        messages.append({"role": "assistant", "content": answer})
        rows.append(row)
    return rows


def run(server: Server, model: str, clients: int, turns: int, new_tokens: int) -> dict:
    alone = chat(server, model, turns, new_tokens, seed=1)
    results: list[list[dict]] = [[] for _ in range(clients)]

    def one(index: int) -> None:
        results[index] = chat(server, model, turns, new_tokens, seed=10 + index)

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    together = [row for rows in results for row in rows]
    chunks = sum(row["chunks"] for row in together)
    return {"alone": alone, "together": results, "together_wall_s": wall, "together_tokens_per_s": chunks / wall,
            "together_ttft_median": statistics.median(row["ttft"] for row in together)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model",
                        help="a converted-layout folder (default: bench.converted's random 1.3B, written once)")
    parser.add_argument("--layers", type=int, help="a random checkpoint with only N language-model layers")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--tf-path", help="a folder with openai and accelerate, for transformers serve only")
    parser.add_argument("--json", type=Path, default=Path("bench-serve-converted.json"))
    args = parser.parse_args(argv)

    model = args.model or str(converted_checkpoint(args.layers))
    results: dict[str, Any] = {"model": model, "clients": args.clients, "turns": args.turns,
                               "new_tokens": args.new_tokens}
    key = secrets.token_urlsafe(32)
    port = free_port()
    ours = Server([sys.executable, "-c", "from dsvl_tui.cli import main; main()", "serve", "--model", model,
                   "--device", "cpu", "--dtype", "float32", "--port", str(port)],
                  {**os.environ, "DSVL_SERVE_API_KEY": key}, port, key)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.tf_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (args.tf_path, env.get("PYTHONPATH", "")) if p)
    theirs = Server([sys.executable, "-m", "transformers.cli.transformers", "serve", model, "--host", "127.0.0.1",
                     "--port", str(port)], env, port, None)
    for name, server in (("dsvl-chat serve", ours), ("transformers serve", theirs)):
        with server:
            results[name] = run(server, model, args.clients, args.turns, args.new_tokens)
        r = results[name]
        alone = " ".join(f"{row['ttft']:.2f}s/{row['tps']:.2f}" for row in r["alone"])
        print(f"{name}: one client, per turn ttft/tok/s: {alone} | {args.clients} clients: median ttft "
              f"{r['together_ttft_median']:.2f}s, {r['together_tokens_per_s']:.2f} tok/s in all, "
              f"{r['together_wall_s']:.1f}s wall",
              flush=True)
    args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
