"""How soon keys answer while a costly answer is drawn: ``python -m dsvl_tui.bench.render``.

Four answers that froze the TUI before each block had a budget (issue 20),
after an ordinary answer (``bench.ui``'s 10,000 tokens of Markdown) as the
yardstick:
``a*`` x 50,000 (100 KB of emphasis delimiters), ``x\\n`` x 200,000, a
table 3,000 columns wide and a list nested 3,000 deep (``- - - ... x``;
``--deep-stairs`` adds the 9 MB form, one item per line, each indented
under the one before). Each streams into the app's real chat pane
(``AssistantMessage.write``, headless, 80x24) in ``--pieces`` pieces, one
every 2 ms, then ``finish()``; meanwhile a key is sent every 100 ms through
the driver, as a terminal's would be: a letter for an ``Input`` (typing),
and every fourth one Escape (a binding). Once everything is drawn, Ctrl+Q.

For each key: the time from its sending to its handling (the input's value
changed, the binding ran) and to the first frame after that (when the
screen shows it). Also the longest gap between two frames while the
answer streams and is drawn (how long the event loop was held at most),
in wall time and in the process's CPU time (a machine shared with other
work stretches the first, not the second),
and how long the answer took to be drawn whole after the last piece.
Prints a table; ``--json`` writes the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SIZE = (80, 24)
TARGET_MS = 100.0
KEY_EVERY_S = 0.1
PIECE_EVERY_S = 0.002


def _table(columns: int, rows: int = 3) -> str:
    row = "|" + "|".join("v" for _ in range(columns)) + "|\n"
    return "|" + "|".join(f"c{i}" for i in range(columns)) + "|\n|" + "---|" * columns + "\n" + row * rows


def answers(deep_stairs: bool = False) -> dict[str, str]:
    from dsvl_tui.bench.ui import markdown_answer

    found = {
        "ordinary (bench.ui's)": "".join(markdown_answer()),  # the yardstick: what this machine does anyway
        "a* x 50,000": "a*" * 50_000,
        "x\\n x 200,000": "x\n" * 200_000,
        "table 3000 columns": _table(3000),
        "list nested 3000": "- " * 3000 + "x\n",
    }
    if deep_stairs:
        found["list nested 3000 (9 MB)"] = "".join("  " * depth + "- x\n" for depth in range(3000))
    return found


@dataclass
class _Keys:
    sent: dict[int, float] = field(default_factory=dict)
    handled: dict[int, float] = field(default_factory=dict)
    shown: dict[int, float] = field(default_factory=dict)
    frames: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # the process's CPU time at each frame
    escapes: int = 0

    def frame(self) -> None:
        now = time.perf_counter()
        self.frames.append(now)
        self.cpu.append(time.process_time())
        for key in self.handled.keys() - self.shown.keys():  # handled since the last frame: shown in this one
            self.shown[key] = now


def _host(keys: _Keys, quit_at: list[float]):
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.widgets import Input

    from dsvl_tui.core.conversation import Conversation
    from dsvl_tui.tui.app import STYLESHEET
    from dsvl_tui.tui.widgets import ChatPane

    class Host(App[None]):
        CSS_PATH = str(STYLESHEET)
        BINDINGS = [Binding("escape", "escape", priority=True)]

        def compose(self) -> ComposeResult:
            yield ChatPane(Conversation(), id="pane")
            yield Input(id="prompt")

        def on_input_changed(self, event: Input.Changed) -> None:
            keys.handled.setdefault(len(event.value), time.perf_counter())  # the n-th letter typed

        def action_escape(self) -> None:
            keys.escapes += 1
            keys.handled[-keys.escapes] = time.perf_counter()  # the n-th escape: -n

        def action_quit(self) -> None:  # type: ignore[override]
            quit_at.append(time.perf_counter())
            self.exit()

        def _display(self, screen: Any, renderable: Any) -> None:
            super()._display(screen, renderable)
            if renderable is not None and not self._batch_count:
                keys.frame()

    return Host()


async def _run(text: str, pieces: int, timeout: float) -> dict[str, Any]:
    from textual import events

    keys, quit_at = _Keys(), list[float]()
    app = _host(keys, quit_at)
    size = -(-len(text) // pieces)
    chunks = [text[start:start + size] for start in range(0, len(text), size)]
    result: dict[str, Any] = {"chars": len(text)}
    async with app.run_test(size=SIZE) as pilot:
        widget = await app.query_one("#pane").start_answer()
        app.query_one("#prompt").focus()
        await pilot.pause()
        sent = {"letters": 0, "escapes": 0}

        def send(key: str, char: str | None) -> None:
            event = events.Key(key, char)
            event.set_sender(app)
            app._driver.send_message(event)

        async def typist() -> None:
            while True:
                if (sent["letters"] + sent["escapes"]) % 4 == 3:
                    sent["escapes"] += 1
                    keys.sent[-sent["escapes"]] = time.perf_counter()  # escapes: -1, -2, ...
                    send("escape", None)
                else:
                    sent["letters"] += 1
                    keys.sent[sent["letters"]] = time.perf_counter()
                    send("a", "a")
                await asyncio.sleep(KEY_EVERY_S)

        typing = asyncio.create_task(typist())
        started = time.perf_counter()
        for chunk in chunks:
            await widget.write(chunk)
            await asyncio.sleep(PIECE_EVERY_S)
        await widget.finish()
        fed = time.perf_counter()
        deadline = fed + timeout
        while widget.markdown.drawn_length < len(text) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        drawn = time.perf_counter()
        result.update(feed_s=fed - started, drawn_after_s=drawn - fed,
                      drawn_whole=widget.markdown.drawn_length == len(text), lines=widget.markdown._drawn.line_count)
        await asyncio.sleep(2 * KEY_EVERY_S)  # the last keys sent get handled and shown
        typing.cancel()
        after = [i for i, at in enumerate(keys.frames) if at >= started]
        frames = [keys.frames[i + 1] - keys.frames[i] for i in after[:-1]]
        cpu = [keys.cpu[i + 1] - keys.cpu[i] for i in after[:-1]]
        result["max_frame_gap_ms"] = max(frames, default=0.0) * 1000
        # the same, in CPU time: what a busy machine adds is left out
        result["max_frame_cpu_ms"] = max(cpu, default=0.0) * 1000
        quit_sent = time.perf_counter()
        send("ctrl+q", None)
        while not quit_at and time.perf_counter() < quit_sent + timeout:
            await asyncio.sleep(0.005)
        result["quit_ms"] = (quit_at[0] - quit_sent) * 1000 if quit_at else None
    for kind, sign in (("typing", 1), ("escape", -1)):
        handled = [(keys.handled[k] - keys.sent[k]) * 1000 for k in keys.sent if k * sign > 0 and k in keys.handled]
        shown = [(keys.shown[k] - keys.sent[k]) * 1000 for k in keys.sent if k * sign > 0 and k in keys.shown]
        lost = sum(1 for k in keys.sent if k * sign > 0 and k not in keys.handled)
        result[kind] = {"keys": len(handled) + lost, "lost": lost,
                        "handled_median_ms": statistics.median(handled) if handled else None,
                        "handled_max_ms": max(handled, default=None),
                        "shown_max_ms": max(shown, default=None)}
    return result


def run(text: str, *, pieces: int = 400, timeout: float = 120.0) -> dict[str, Any]:
    return asyncio.run(_run(text, pieces, timeout))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def report(results: dict[str, dict[str, Any]]) -> list[str]:
    rows = [f"{'answer':<26}{'chars':>10}{'typing med/max':>16}{'shown max':>11}{'esc max':>9}{'ctrl+q':>8}"
            f"{'frame gap':>11}{'(cpu)':>7}{'drawn after':>13}  verdict"]
    for name, result in results.items():
        typing, escape = result["typing"], result["escape"]
        worst = max((v for v in (typing["shown_max_ms"], escape["shown_max_ms"], result["quit_ms"]) if v is not None),
                    default=float("inf"))
        ok = worst <= TARGET_MS and not typing["lost"] and not escape["lost"] and result["quit_ms"] is not None
        rows.append(f"{name:<26}{result['chars']:>10,}"
                    f"{_ms(typing['handled_median_ms']) + '/' + _ms(typing['handled_max_ms']):>16}"
                    f"{_ms(typing['shown_max_ms']):>11}{_ms(escape['shown_max_ms']):>9}{_ms(result['quit_ms']):>8}"
                    f"{_ms(result['max_frame_gap_ms']):>11}{_ms(result['max_frame_cpu_ms']):>7}"
                    f"{result['drawn_after_s']:>12.2f}s  {'PASS' if ok else 'FAIL'} (target {TARGET_MS:.0f} ms)")
    rows.append("times in ms: key sent -> handled (median/max) and -> first frame after (shown max); "
                "frame gap: longest between two frames (cpu: the most CPU time between two); "
                "drawn after: from the last piece to all drawn")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsvl_tui.bench.render", description=__doc__.split("\n")[0])
    parser.add_argument("--pieces", type=int, default=400, help="pieces each answer streams in (default 400)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for an answer to be drawn")
    parser.add_argument("--only", action="append", default=None, help="run only answers whose name holds this")
    parser.add_argument("--deep-stairs", action="store_true", help="add the 9 MB nested list")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    options = parser.parse_args(argv)
    results = {}
    for name, text in answers(options.deep_stairs).items():
        if options.only and not any(part in name for part in options.only):
            continue
        results[name] = run(text, pieces=options.pieces, timeout=options.timeout)
        print(f"{name}: done", file=sys.stderr, flush=True)
    rows = report(results)
    print("\n".join(rows))
    if options.json is not None:
        options.json.write_text(json.dumps(results, indent=2))
    return 0 if all(row.endswith(f"PASS (target {TARGET_MS:.0f} ms)") for row in rows[1:-1]) else 1


if __name__ == "__main__":
    sys.exit(main())
