"""The status bar: model, device and dtype, state, speed, context meter, pending images.

One line. When the terminal is too narrow for every part, the least useful
parts are dropped first (device, then speed, then the model name), so the
state, the context meter and the pending images stay visible at 80 columns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from dsvl_tui.text import printable

if TYPE_CHECKING:
    from engine.types import EngineInfo, GenerationStats

SEPARATOR = " \u2502 "
SHORT_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
METER_WIDTH = 10
STATE_STYLE = {
    "loading": "bold $text-warning",
    "ready": "bold $text-success",
    "generating": "bold $text-accent",
    "error": "bold $text-error",
}


def meter(fraction: float, width: int = METER_WIDTH) -> tuple[str, str]:
    """A bar of ``width`` cells filled to ``fraction`` and its style (colour by how full it is)."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    style = "$success" if fraction < 0.75 else "$warning" if fraction < 0.9 else "$error"
    return "\u2501" * filled + "\u2500" * (width - filled), style


def short_count(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 10_000 else str(n)


class StatusBar(Widget):
    """What the app is doing, on one line at the bottom."""

    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        width: 1fr;
        background: $panel;
        color: $foreground;
        padding: 0 1;
    }
    """

    model: reactive[str] = reactive("")
    """The model id or folder (its last part is shown)."""
    device: reactive[str] = reactive("")
    """Device and dtype, then int8 or int4 when the weights are quantized, e.g. ``cuda:0 bfloat16 int4``."""
    state: reactive[str] = reactive("loading")
    """loading, ready, generating or error."""
    detail: reactive[str] = reactive("")
    """Load progress or the one-line error, shown after the state."""
    progress: reactive[float | None] = reactive(None)
    """Load progress as a fraction, when it is known."""
    tokens_per_second: reactive[float | None] = reactive(None)
    """Decode speed of the last answer."""
    time_to_first_token: reactive[float | None] = reactive(None)
    """Seconds to the first token of the last answer."""
    context_used: reactive[int | None] = reactive(None)
    """Tokens the active conversation takes."""
    context_window: reactive[int | None] = reactive(None)
    """The model's context window in tokens."""
    pending_images: reactive[int] = reactive(0)
    """Images attached to the next message."""
    waiting: reactive[int] = reactive(0)
    """Answers queued behind the one being generated (or behind the load)."""

    def show(self, *, state: str, detail: str | None = None, info: EngineInfo | None = None,
             stats: GenerationStats | None = None, context_used: int | None = None,
             pending_images: int = 0, waiting: int = 0) -> None:
        """Show the app's state; ``info`` (the model's) and ``stats`` (the last answer's) may be None.

        ``detail`` None keeps the current one (load progress updates it on its own).
        """
        self.state = state
        if detail is not None:
            self.detail = detail
        if state != "loading":
            self.progress = None
        if info is not None and state != "loading":
            self.model, self.context_window = info.model_id, info.context_length
            # A remote model (``--endpoint``) has the server's URL as its device and no dtype.
            quantized = getattr(info, "quantize", "none")  # int8 or int4 weights (``--quantize``)
            self.device = " ".join(part for part in (info.device, SHORT_DTYPES.get(info.dtype, info.dtype),
                                                      "" if quantized == "none" else quantized) if part)
        self.context_used = context_used
        self.tokens_per_second = getattr(stats, "tokens_per_second", None)
        self.time_to_first_token = getattr(stats, "time_to_first_token", None)
        self.pending_images, self.waiting = pending_images, waiting

    def _parts(self) -> list[tuple[int, Content]]:
        """(priority, piece) in display order; a higher priority number is dropped first."""
        parts: list[tuple[int, Content]] = []
        state = Content.assemble((self.state, STATE_STYLE.get(self.state, "bold")))
        if self.detail:
            state = Content.assemble(state, " ", (printable(self.detail), "$text-muted"))
        parts.append((0, state))
        if self.state == "loading" and self.progress is not None:
            bar, _ = meter(self.progress)
            parts.append((1, Content.assemble((bar, "$primary"), f" {self.progress:4.0%}")))
        if self.model:
            name = printable(self.model.rstrip("/").rsplit("/", 1)[-1])
            parts.append((3, Content.assemble((name, "$primary"))))
        if self.device:
            parts.append((5, Content(printable(self.device))))
        speed = []
        if self.tokens_per_second:
            speed.append(f"{self.tokens_per_second:.1f} tok/s")
        if self.time_to_first_token is not None:
            speed.append(f"ttft {self.time_to_first_token:.2f}s")
        if speed:
            parts.append((4, Content(" ".join(speed))))
        if self.context_window:
            used = self.context_used
            bar, style = meter((used or 0) / self.context_window)
            label = f" {short_count(used) if used is not None else '?'}/{short_count(self.context_window)}"
            parts.append((2, Content.assemble("ctx ", (bar, style), label)))
        if self.waiting:
            parts.append((1, Content.assemble((f"{self.waiting} waiting", "$text-warning"))))
        if self.pending_images:
            noun = "image" if self.pending_images == 1 else "images"
            parts.append((0, Content.assemble((f"+{self.pending_images} {noun}", "bold $text-accent"))))
        return parts

    def render(self) -> Content:
        parts = self._parts()
        width = self.content_region.width or self.size.width
        while len(parts) > 1 and self._length(parts) > width:
            worst = max(range(len(parts)), key=lambda i: (parts[i][0], i))
            if parts[worst][0] == 0:
                break
            del parts[worst]
        line = Content(SEPARATOR).join(piece for _, piece in parts)
        return line.truncate(width, ellipsis=True) if width else line

    @staticmethod
    def _length(parts: list[tuple[int, Content]]) -> int:
        return sum(piece.cell_length for _, piece in parts) + len(SEPARATOR) * (len(parts) - 1)
