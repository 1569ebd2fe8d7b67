"""An assistant answer: streamed as markdown, then finished with a marker line.

The widget owns one ``MarkdownStream``: chunks go through ``write()``, which
queues them and lets the stream coalesce them and re-parse only the last
block, so the cost of a chunk does not grow with the length of the answer.
``finish()`` stops the stream and does one ``update()`` with the whole text,
repairing any block the stream left half-parsed.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Label, Markdown
from textual.widgets.markdown import MarkdownStream

from engine.types import GenerationStats

from ..conversation import ChatMessage
from ..text import printable


def stats_line(stats: GenerationStats | None) -> str:
    if stats is None or not stats.new_tokens:
        return ""
    parts = [f"{stats.new_tokens} tokens"]
    if stats.tokens_per_second:
        parts.append(f"{stats.tokens_per_second:.1f} tok/s")
    if stats.time_to_first_token is not None:
        parts.append(f"first token {stats.time_to_first_token:.2f}s")
    if stats.dropped_turns:
        parts.append(f"{stats.dropped_turns} old turn(s) left out to fit")
    return " \u00b7 ".join(parts)


class AssistantMessage(Vertical):
    """The model's answer to one user message."""

    DEFAULT_CSS = """
    AssistantMessage {
        height: auto;
        padding: 0 1;
        margin: 0 0 1 0;
        border-left: thick $accent;
        & > .role {
            color: $accent;
            text-style: bold;
        }
        & > Markdown {
            height: auto;
            margin: 0;
            padding: 0;
            background: transparent;
        }
        & > .marker {
            color: $text-muted;
            display: none;
        }
        &.-marked > .marker {
            display: block;
        }
        &.-waiting > .marker { color: $text-warning; }
        &.-stopped > .marker { color: $text-warning; }
        &.-error > .marker { color: $text-error; }
        &.-empty > Markdown { display: none; }
    }
    """

    state: reactive[str] = reactive("waiting")
    """waiting, streaming, done, stopped or error."""

    def __init__(self, message: ChatMessage | None = None, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.message = message
        self._parts: list[str] = []
        self._stream: MarkdownStream | None = None
        self._marker = "waiting for its turn"
        if message is not None:
            self._parts = [printable(message.text)]
            state = "error" if message.error else "stopped" if message.stopped else "done"
            self.set_reactive(AssistantMessage.state, state)
            self._marker = self._final_marker(message.stats, message.stopped, message.error)

    def compose(self) -> ComposeResult:
        yield Label("DeepSeek-VL", classes="role")
        yield Markdown("".join(self._parts))
        yield Label(Content(self._marker), classes="marker")

    def on_mount(self) -> None:
        self._apply_state()
        if self.message is not None:
            self.call_after_refresh(self._trim_last_block)

    def _trim_last_block(self) -> None:
        # Inline, on the one block: a ``:last-child`` rule would restyle every block on each append.
        blocks = self.markdown.children
        if blocks:
            blocks[-1].styles.margin = (blocks[-1].styles.margin.top, 0, 0, 0)

    def watch_state(self) -> None:
        if self.is_mounted:
            self._apply_state()

    def _apply_state(self) -> None:
        self.set_class(self.state == "waiting", "-waiting")
        self.set_class(self.state == "done", "-done")
        self.set_class(self.state == "stopped", "-stopped")
        self.set_class(self.state == "error", "-error")
        self.set_class(not self.text, "-empty")
        self.set_class(bool(self._marker) and self.state != "streaming", "-marked")

    @property
    def text(self) -> str:
        """What the answer shows so far (control characters removed)."""
        return "".join(self._parts)

    @property
    def markdown(self) -> Markdown:
        return self.query_one(Markdown)

    def set_marker(self, text: str) -> None:
        self._marker = text
        if self.is_mounted:
            self.query_one(".marker", Label).update(Content(printable(text)))
            self._apply_state()

    def wait(self, reason: str) -> None:
        """Show why the answer has not started yet."""
        self.state = "waiting"
        self.set_marker(reason)

    async def write(self, chunk: str) -> None:
        """Append streamed text (made printable) through the markdown stream."""
        chunk = printable(chunk)
        if not chunk:
            return
        if self._stream is None:
            self.state = "streaming"
            self._stream = Markdown.get_stream(self.markdown)
        self._parts.append(chunk)
        self.set_class(False, "-empty")
        await self._stream.write(chunk)

    async def finish(self, stats: GenerationStats | None = None, *, stopped: bool = False,
                     error: str | None = None) -> None:
        """End the answer: stop the stream, render the whole text once, show the marker."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        if self._parts:
            self._parts = ["".join(self._parts)]
            await self.markdown.update(self._parts[0])
            self._trim_last_block()
        self.set_marker(self._final_marker(stats, stopped, error))
        self.state = "error" if error else "stopped" if stopped else "done"
        self._apply_state()

    @staticmethod
    def _final_marker(stats: GenerationStats | None, stopped: bool, error: str | None) -> str:
        if error:
            return f"error: {error}"
        line = stats_line(stats)
        if stopped:
            return "stopped" + (f" \u00b7 {line}" if line else "")
        return line
