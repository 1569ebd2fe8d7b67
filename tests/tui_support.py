"""Helpers for the TUI tests: a scripted stand-in engine and Pilot waiting helpers.

The stand-in follows the engine's documented API (``info``, ``stream``,
``prepare``) and is used only where timing matters (holding an answer half
way, queueing); the streaming path itself is tested on the real engine.
``CompareSides`` answers both sides of ``/compare`` on one stand-in, the
compared answer a chunk at a time as a test lets it (app and REPL tests).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

from textual.app import App, ComposeResult

import engine
from engine.types import EngineInfo, GenerationSettings, GenerationStats

FIXED_INFO = EngineInfo(
    model_id="deepseek-ai/deepseek-vl-1.3b-chat", variant="chat", tower="siglip", device="cuda:0",
    dtype="bfloat16", parameters=1_900_000_000, context_length=4096,
)


@dataclass
class ScriptedStream:
    chunks: list[str]
    cancel: threading.Event
    gate: threading.Event | None
    hold_after: int
    error: Exception | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)

    def __iter__(self):
        self.stats.prompt_tokens = 10
        for index, chunk in enumerate(self.chunks):
            if index == self.hold_after and self.gate is not None:
                while not self.gate.wait(0.01):
                    if self.cancel.is_set():
                        break
            if self.cancel.is_set():
                self.stats.stop_reason = "cancelled"
                return
            self.stats.new_tokens += 1
            if index == 0:
                self.stats.time_to_first_token = 0.05
            yield chunk
        if self.error is not None:
            self.stats.stop_reason = "error"
            raise self.error
        self.stats.tokens_per_second = 42.0
        self.stats.stop_reason = "length"


class ScriptedEngine:
    """Answers every message with ``chunks``; holds after ``hold_after`` chunks until ``gate`` is set."""

    def __init__(self, chunks=("Hello", " there", "."), *, info: EngineInfo = FIXED_INFO, hold_after: int = -1,
                 stream_error: Exception | None = None, start_error: Exception | None = None) -> None:
        self.info = info
        self.chunks = list(chunks)
        self.gate = threading.Event() if hold_after >= 0 else None
        self.hold_after = hold_after
        self.stream_error = stream_error
        self.start_error = start_error
        self.calls: list[list[engine.Message]] = []
        self.lock = threading.Lock()
        self.concurrent = 0
        self.max_concurrent = 0

    def stream(self, messages, settings=None, *, system=None, cancel=None, cache_key="default"):
        if self.start_error is not None:
            raise self.start_error
        self.calls.append(list(messages))
        stream = ScriptedStream(self.chunks, cancel or threading.Event(), self.gate, self.hold_after,
                                self.stream_error)
        return _Counting(self, stream)

    def prepare(self, messages, *, system=None, reserve=0):
        words = sum(len(m.text.split()) + 5 for m in messages)
        return SimpleNamespace(input_ids=[0] * words)


class _Counting:
    """Counts generations running at once (never more than the backend decodes together: one, unless it has a
    ``max_batch``)."""

    def __init__(self, owner: ScriptedEngine, stream: ScriptedStream) -> None:
        self.owner, self.inner = owner, stream

    token_ids: tuple[int, ...] = ()  # a stand-in streams text only (engine.types.AnswerStream)

    @property
    def stats(self):
        return self.inner.stats

    def close(self) -> None:
        pass  # the iteration has ended, or was left (its generator closed): nothing runs on

    def __iter__(self):
        with self.owner.lock:
            self.owner.concurrent += 1
            self.owner.max_concurrent = max(self.owner.max_concurrent, self.owner.concurrent)
        try:
            yield from self.inner
        finally:
            with self.owner.lock:
                self.owner.concurrent -= 1


def scripted_loader(backend, *, delay: float = 0.0, gate: threading.Event | None = None, error=None):
    """A stand-in for ``engine.load`` returning ``backend`` (after ``gate`` is set, if given)."""

    def load(model, *, device="auto", dtype="auto", revision=None, progress=None, compile=False):
        if progress is not None:
            progress(SimpleNamespace(stage="download", done=50, total=100, message="downloading 50%"))
        if gate is not None:
            gate.wait(10)
        if delay:
            time.sleep(delay)
        if error is not None:
            raise error
        if progress is not None:
            progress(SimpleNamespace(stage="ready", done=1, total=1, message="ready"))
        return backend

    return load


async def wait_for(pilot, condition, timeout: float = 10.0, step: float = 0.02) -> None:
    """Let the app run until ``condition()`` is true (fails the test after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {getattr(condition, '__name__', condition)}")
        await pilot.pause(step)
    await pilot.pause()


def run_async(test):
    """Run an async test function with ``asyncio.run`` (the suite has no asyncio plugin)."""
    import asyncio
    import functools
    import inspect

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    wrapper.__signature__ = inspect.signature(test)
    return wrapper


def screen_text(app) -> str:
    """What the screen shows, as plain text (each character as the terminal would get it)."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text(styles=False)


class Host(App):
    """A bare app that mounts one widget, for widget tests."""

    def __init__(self, widget) -> None:
        super().__init__()
        self.widget = widget

    def compose(self) -> ComposeResult:
        yield self.widget


# --- driving the whole app (tests/tui/test_answering.py and its siblings, and the cross-cutting tests) ---

GREEDY = GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=24)


def scripted_app(backend=None, **loader_options):
    """The full app on a ``ScriptedEngine`` (no model)."""
    from dsvl_tui.core.options import Options
    from dsvl_tui.tui.app import DsvlApp

    backend = backend or ScriptedEngine()
    options = Options(model=FIXED_INFO.model_id, settings=GREEDY)
    return DsvlApp(options, loader=scripted_loader(backend, **loader_options))


async def ready(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.engine is not None and not pilot.app.loading)


async def type_line(pilot, text: str, submit: bool = True) -> None:
    prompt = pilot.app.prompt
    prompt.focus()
    prompt.load_text_at_end(text)
    await pilot.pause()
    if submit:
        await pilot.press("enter")
        await pilot.pause()
        await wait_for(pilot, lambda: not pilot.app.sending)  # a message is drawn once journaled


def first_choice(palette) -> str:
    """The text of the command palette's first choice ('' while it has none): what Enter runs once the search
    is done."""
    options = palette.query_one("CommandList")
    return str(options.get_option_at_index(0).prompt).strip() if options.option_count else ""


def notices(app, error: bool | None = None) -> list[str]:
    from dsvl_tui.tui.widgets import Notice

    return [n.text for n in app.active.query(Notice) if error is None or n.is_error == error]


def real_app(model, settings=GREEDY, **options):
    """The full app on the real engine loading ``model`` (a tiny checkpoint's folder)."""
    from dsvl_tui.core.options import Options
    from dsvl_tui.tui.app import DsvlApp

    return DsvlApp(Options(model=str(model), settings=settings, **options))


def answers(pane) -> list:
    """The assistant messages of a pane's conversation."""
    return [m for m in pane.conversation.messages if m.role == "assistant"]


async def answered(pilot, count: int = 1, pane=None) -> None:
    """Wait until ``pane`` (the active one) has ``count`` answers and nothing queued."""
    app = pilot.app
    target = pane or app.active
    await wait_for(pilot, lambda: len(answers(target)) >= count and app.queue.for_pane(target) is None)


def picture(path):
    """A small RGB picture written at ``path``."""
    from PIL import Image

    Image.new("RGB", (32, 24), (0, 128, 255)).save(path)
    return path


class SteppedStream:
    """The compared answer: each chunk only once its own event is set (a stop ends it there)."""

    token_ids: tuple[int, ...] = ()

    def __init__(self, chunks: list[str], steps: list[threading.Event], cancel: threading.Event) -> None:
        self.chunks, self.steps, self.cancel = chunks, steps, cancel
        self.stats = GenerationStats()

    def __iter__(self):
        for chunk, step in zip(self.chunks, self.steps, strict=True):
            while not step.wait(0.01):
                if self.cancel.is_set():
                    self.stats.stop_reason = "cancelled"
                    return
            self.stats.new_tokens += 1
            yield chunk
        self.stats.stop_reason = "length"

    def close(self) -> None:
        pass


class CompareSides(ScriptedEngine):
    """One engine answering both sides (``/compare --temperature 0.9``): the main answer as ``ScriptedEngine``
    gives it, the compared one (told apart by its cache key) a chunk at a time, as the test lets it."""

    def __init__(self, main: list[str], compared: list[str], **options) -> None:
        super().__init__(main, **options)
        self.compared = compared
        self.steps = [threading.Event() for _ in compared]

    def stream(self, messages, settings=None, *, system=None, cancel=None, cache_key="default"):
        if cache_key.endswith("/compared"):
            return SteppedStream(self.compared, self.steps, cancel or threading.Event())
        return super().stream(messages, settings, system=system, cancel=cancel, cache_key=cache_key)
