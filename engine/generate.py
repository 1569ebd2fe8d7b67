"""The decode loop and the stream a caller iterates.

Generation runs in a background thread: prefill the prompt embeddings
once, then one token per step on the KV cache (a growing transformers cache
here, or the static one of ``static_decode``). Each step checks the cancel
event, so a cancel stops generation within one token and keeps what was
produced. Sampling uses transformers' logits processors, the same ones
upstream's ``generate`` call applies.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from .detokenize import IncrementalDecoder, StopStringFilter
from .errors import EngineError, GenerationError
from .types import GenerationSettings, GenerationStats, StopReason

_DONE = object()
# torch.OutOfMemoryError is new in torch 2.5; older releases only have the CUDA one.
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on ``device`` (a GPU runs ahead of Python): call it before reading a clock.

    ``device`` is the engine's (``cuda:1`` waits for that GPU, not the
    current one); a no-op on the CPU. The decode loop itself needs none: it
    turns each sampled token into a Python int, which waits for the GPU.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def release_cached_memory() -> None:
    """After running out of GPU memory: free what the failed work left and hand torch's cached blocks back.

    The next turn (or another program) then finds the memory free rather
    than held in torch's cache; a no-op where CUDA was never used.
    """
    import gc

    gc.collect()  # tensors of the failed turn may sit in reference cycles (frames, closures)
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def failure_message(exc: BaseException) -> str:
    """The one line a stream ends with when generating raised ``exc``."""
    if isinstance(exc, EngineError):
        return str(exc)
    if isinstance(exc, OUT_OF_MEMORY):
        return "out of GPU memory while generating; start a new conversation, shorten it, or load a smaller model"
    return f"generation failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


@dataclass
class DecodeJob:
    """Everything one generation needs, prepared before the thread starts."""

    embeds: torch.Tensor  # [1, T', D] embeddings of the prompt positions not already in the cache
    steps: Steps  # runs the model on a cache holding the reused prefix (possibly empty)
    prompt_tokens: int
    max_new_tokens: int
    eos_ids: tuple[int, ...]
    stop_strings: tuple[str, ...]
    decode: Callable[[Sequence[int]], str]
    settings: GenerationSettings


class Steps(Protocol):
    """Runs the language model on one conversation's KV cache, each call giving the last position's logits."""

    def prefill(self, embeds: torch.Tensor) -> torch.Tensor: ...  # [1, T, D] -> [1, V]

    def next(self, token: int) -> torch.Tensor: ...  # one generated token fed back -> [1, V]


class CacheSteps:
    """Steps on a transformers cache that grows with each call (``DynamicCache``)."""

    def __init__(self, model, cache):
        self.model = model
        self.cache = cache

    def prefill(self, embeds: torch.Tensor) -> torch.Tensor:
        logits, self.cache = self.model.forward_embeds(embeds, self.cache, logits_to_keep=1)
        return logits[:, -1, :]

    def next(self, token: int) -> torch.Tensor:
        ids = torch.tensor([[token]], device=self.model.device)
        return self.prefill(self.model.language_model.get_input_embeddings()(ids))


def _logits_processors(settings: GenerationSettings):
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.temperature > 0:
        if settings.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k:
            processors.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            processors.append(TopPLogitsWarper(settings.top_p))
    return processors


class Sampler:
    """Picks the next token from the last position's logits."""

    def __init__(self, settings: GenerationSettings, device: torch.device):
        self.settings = settings
        self.processors = _logits_processors(settings)
        self.generator = None
        if settings.temperature > 0:
            self.generator = torch.Generator(device=device)
            if settings.seed is not None:
                self.generator.manual_seed(settings.seed)
            else:
                self.generator.seed()

    def __call__(self, logits: torch.Tensor, generated: torch.Tensor) -> int:
        # logits: [1, V] float32; generated: [1, n] ids so far (upstream passes
        # only embeddings to generate, so its repetition penalty sees only new tokens).
        scores = self.processors(generated, logits) if len(self.processors) else logits
        if self.generator is None:
            return int(scores.argmax(dim=-1))
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))


class TextStream:
    """Iterate to get text chunks; ``stats`` is complete once iteration ends.

    Errors in the worker thread end the iteration with a ``GenerationError``
    after the text produced so far. Leaving the loop early (``break``) or
    calling ``close()`` cancels the generation.
    """

    def __init__(self, run: Callable[[TextStream], None] | None, cancel: threading.Event | None,
                 lock: threading.Lock | None, *, worker: Worker | None = None,
                 submit: Callable[[TextStream], None] | None = None):
        self.stats = GenerationStats()
        self._chunks: list[str] = []
        self.token_ids: list[int] = []  # generated ids, EOS excluded
        self.cancel = cancel if cancel is not None else threading.Event()
        self._abort = threading.Event()  # set when the caller stops iterating early
        self._queue: queue.Queue = queue.Queue()
        self._lock = lock
        self._run = run
        self._worker = worker  # None: a thread of its own
        self._submit = submit  # set: the scheduler (``batch``) runs it, and ends it with ``end``
        self._finished = threading.Event()
        self._started = False

    def _start(self) -> None:
        self._started = True
        if self._submit is not None:
            self._submit(self)
        elif self._worker is not None:
            self._worker.submit(self._work)
        else:
            threading.Thread(target=self._work, name="dsvl-generate", daemon=True).start()

    def _work(self) -> None:
        assert self._run is not None and self._lock is not None  # a stream of its own thread
        try:
            with self._lock:
                out_of_memory = False
                try:
                    self._run(self)
                except Exception as exc:  # noqa: BLE001 - any crash must reach the caller, not kill the app
                    out_of_memory = isinstance(exc, OUT_OF_MEMORY)
                    self._fail(failure_message(exc))
                finally:
                    if out_of_memory:  # here the traceback, and with it the failed turn's tensors, is gone
                        release_cached_memory()
                    self._queue.put(_DONE)
        finally:
            self._finished.set()  # after the lock is released: a caller that waited may start the next one

    def end(self, error: str | None = None) -> None:
        """The scheduler's end of a stream it ran: ``error`` set fails it, else ``stats`` are final."""
        if error is not None:
            self._fail(error)
        self._queue.put(_DONE)
        self._finished.set()

    def _fail(self, message: str) -> None:
        self.stats.stop_reason = "error"
        self.stats.error = message

    @property
    def text(self) -> str:
        """Everything streamed so far."""
        return "".join(self._chunks)

    def emit(self, chunk: str) -> None:
        if chunk:
            self._chunks.append(chunk)
            self._queue.put(chunk)

    def __iter__(self) -> Iterator[str]:
        if not self._started:
            self._start()
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    break
                yield item
        finally:
            self._abort.set()  # a no-op if the worker already finished
            self._finished.wait()
        if self.stats.stop_reason == "error":
            raise GenerationError(self.stats.error or "generation failed")

    def cancelled(self) -> bool:
        return self.cancel.is_set() or self._abort.is_set()

    def close(self) -> None:
        """Stop the generation (if running) and wait for the worker to end."""
        self._abort.set()
        if self._started:
            self._finished.wait()


class Answer:
    """One answer being decoded: sample each next token, stream its text, decide when it ends.

    The same object serves a decode loop of its own (``run_decode``) and a
    sequence in the scheduler's running batch (``batch``): the caller runs
    the model and hands each step's logits to ``take``; the caller appends
    to ``fed`` the tokens its cache has been fed, so the kept context is
    ``prompt + fed`` whichever way the answer ends.
    """

    def __init__(self, job: DecodeJob, stream: TextStream, started: float, device: torch.device):
        self.job = job
        self.stream = stream
        self.started = started
        self.sampler = Sampler(job.settings, device)
        self.decoder = IncrementalDecoder(job.decode)
        self.stops = StopStringFilter(job.stop_strings)
        self.generated = torch.empty((1, 0), dtype=torch.long, device=device)
        self.fed: list[int] = []
        self.first_token_at: float | None = None
        self.reason: StopReason = "length"
        stream.stats.prompt_tokens = job.prompt_tokens

    def take(self, logits: torch.Tensor) -> int | None:
        """The next token to feed back, from this step's logits [1, V]; None when the answer has ended."""
        stats = self.stream.stats
        if self.stream.cancelled():
            self.reason = "cancelled"
            return None
        if stats.new_tokens >= self.job.max_new_tokens:
            return None  # "length"
        token = self.sampler(logits.float(), self.generated)
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            stats.time_to_first_token = self.first_token_at - self.started
        if token in self.job.eos_ids:
            self.reason = "eos"
            return None
        self.generated = torch.cat([self.generated, torch.tensor([[token]], device=self.generated.device)], dim=1)
        self.stream.token_ids.append(token)
        stats.new_tokens += 1
        self.stream.emit(self.stops.push(self.decoder.push(token)))
        if self.stops.stopped:
            self.reason = "stop_string"
            return None
        if stats.new_tokens == self.job.max_new_tokens:
            return None
        return token

    def finish(self) -> None:
        """Flush held-back text and make the stats final."""
        stats = self.stream.stats
        if self.reason != "stop_string":
            self.stream.emit(self.stops.push(self.decoder.flush()))
            self.stream.emit(self.stops.flush())
            if self.stops.stopped:
                self.reason = "stop_string"
        ended = time.perf_counter()
        stats.total_seconds = ended - self.started
        if self.first_token_at is not None and stats.new_tokens > 1:
            stats.tokens_per_second = (stats.new_tokens - 1) / max(ended - self.first_token_at, 1e-9)
        stats.stop_reason = self.reason


def run_decode(model, job: DecodeJob, stream: TextStream, started: float) -> list[int]:
    """Prefill then decode one token at a time, streaming text into ``stream``.

    Returns the generated ids that were fed back through ``job.steps`` (so
    its cache then holds the prompt plus these).
    """
    answer = Answer(job, stream, started, model.device)
    with torch.inference_mode():
        logits = job.steps.prefill(job.embeds)
        while (token := answer.take(logits)) is not None:
            logits = job.steps.next(token)
            answer.fed.append(token)
    answer.finish()
    return answer.fed


class Worker:
    """One long-lived thread that runs the calls given to it, in order.

    For the compiled decode step: torch keeps recorded CUDA graphs per
    thread, so its warm-up and every generation must run on the same
    thread, or each turn would record them again (and hold more memory).
    """

    def __init__(self, name: str):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            try:
                call()
            except BaseException:  # noqa: BLE001 - calls report their own errors; the thread must outlive them
                pass
            # Else the last call (a stream, and through it the engine) stays referenced while the thread waits.
            del call

    def submit(self, call: Callable[[], None]) -> None:
        self._calls.put(call)

    def call(self, function: Callable[[], object]) -> object:
        """Run ``function`` on the thread and return its result (or raise its exception) here."""
        done = threading.Event()
        outcome: list = []

        def run() -> None:
            try:
                outcome.append((True, function()))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                outcome.append((False, exc))
            finally:
                done.set()

        self.submit(run)
        done.wait()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        """End the thread once the calls already given have run."""
        self._calls.put(None)
