"""The status bar: model, device and dtype, state, speed, context meter, pending images.

One line. When the terminal is too narrow for every part, the least useful
are shortened or dropped first: the time to first token, then the context
meter's bar (its numbers stay), the speed, the device, the model name, and
last the context; the state and the pending images always stay. At 80
columns the device (``cpu fp32``) stays beside ``+N images``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from dsvl_tui.core.text import printable

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
    "connecting": "bold $text-warning",  # --endpoint: the server has not answered yet
    "not connected": "bold $text-error",  # ... and the last try failed (the detail says why)
}
# How soon each step is taken when the line is too long: the highest first (see ``_parts``).
DROP_TTFT, SHORT_METER, DROP_SPEED, DROP_DEVICE, DROP_MODEL, DROP_CONTEXT, DROP_EXTRA = 9, 8, 7, 6, 3, 2, 1
KEEP = 0


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
    """loading, ready, generating, error, or (``--endpoint``) connecting and not connected."""
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

    def _parts(self) -> list[tuple[list[int], list[Content]]]:
        """The pieces in display order, each as (steps, forms): ``forms`` from the longest to the shortest,
        and ``steps[i]`` how soon form ``i`` gives way to the next (the last: to nothing; ``KEEP``: never)."""
        parts: list[tuple[list[int], list[Content]]] = []
        state = Content.assemble((self.state, STATE_STYLE.get(self.state, "bold")))
        if self.detail:
            state = Content.assemble(state, " ", (printable(self.detail), "$text-muted"))
        parts.append(([KEEP], [state]))
        if self.state == "loading" and self.progress is not None:
            bar, _ = meter(self.progress)
            parts.append(([DROP_EXTRA], [Content.assemble((bar, "$primary"), f" {self.progress:4.0%}")]))
        if self.model:
            name = printable(self.model.rstrip("/").rsplit("/", 1)[-1])
            parts.append(([DROP_MODEL], [Content.assemble((name, "$primary"))]))
        if self.device:
            parts.append(([DROP_DEVICE], [Content(printable(self.device))]))
        if self.tokens_per_second:
            speed = f"{self.tokens_per_second:.1f} tok/s"
            if self.time_to_first_token is not None:
                parts.append(([DROP_TTFT, DROP_SPEED],
                              [Content(f"{speed} ttft {self.time_to_first_token:.2f}s"), Content(speed)]))
            else:
                parts.append(([DROP_SPEED], [Content(speed)]))
        elif self.time_to_first_token is not None:
            parts.append(([DROP_TTFT], [Content(f"ttft {self.time_to_first_token:.2f}s")]))
        if self.context_window:
            used = self.context_used
            bar, style = meter((used or 0) / self.context_window)
            label = f"{short_count(used) if used is not None else '?'}/{short_count(self.context_window)}"
            parts.append(([SHORT_METER, DROP_CONTEXT],
                          [Content.assemble("ctx ", (bar, style), " ", label), Content(f"ctx {label}")]))
        if self.waiting:
            parts.append(([DROP_EXTRA], [Content.assemble((f"{self.waiting} waiting", "$text-warning"))]))
        if self.pending_images:
            noun = "image" if self.pending_images == 1 else "images"
            parts.append(([KEEP], [Content.assemble((f"+{self.pending_images} {noun}", "bold $text-accent"))]))
        return parts

    def render(self) -> Content:
        parts = self._parts()
        width = self.content_region.width or self.size.width
        while width and self._length([forms[0] for _, forms in parts]) > width:
            worst = max(range(len(parts)), key=lambda i: (parts[i][0][0], i))
            steps, forms = parts[worst]
            if steps[0] == KEEP:
                break
            if len(forms) > 1:
                parts[worst] = (steps[1:], forms[1:])
            else:
                del parts[worst]
        line = Content(SEPARATOR).join(forms[0] for _, forms in parts)
        return line.truncate(width, ellipsis=True) if width else line

    @staticmethod
    def _length(pieces: list[Content]) -> int:
        return sum(piece.cell_length for piece in pieces) + len(SEPARATOR) * (len(pieces) - 1)
