"""The runners: who decodes which answer, when. ``Engine.stream`` hands each request to one.

``admit`` sets a request up (the kept context it reuses, the prompt
positions left to prefill, its ``decode.Answer``); ``keep`` stores its
context when it ends. Both runners use them:

``OneAtATime`` (``max_batch`` 1, and compiled decoding): each answer on a
thread of its own (or the compiled decoder's worker), under the engine
lock, prefill then one token per step (``decode.run_decode``).

``Scheduler`` (``max_batch`` > 1, continuous batching) owns the running
batch; one scheduler thread decodes every running answer together. Each
step, under the engine lock:

1. Sequences whose caller cancelled (or stopped iterating) leave: a cancel
   frees its place within one step, and keeps what was produced.
2. Prefill, one newcomer at a time: while fewer than ``max_batch`` run,
   the oldest waiting request is taken in. Each step does one piece of its
   work: one of its images not in the feature cache through the vision
   tower, or (once all are encoded, and its kept-context match is made,
   see ``caches.reuse``) at most ``PREFILL_CHUNK`` of its prompt positions. When
   the prompt is in, its first token is sampled and it joins the batch.
   So a running answer's next token waits, per step, for at most one
   image's encoding or one chunk of one prompt.
3. One batched decode forward for every running sequence
   (``decode.decode_step`` on ``caches.kv.BatchCache``: rows right-padded
   under an attention mask), then each sequence samples its own next token
   with its own settings, generator and stop strings (``decode.Answer``). A sequence that ended
   leaves at once: its row is copied out, compactly, into the engine's
   store of kept contexts (prefix reuse for its next turn), and its stream
   ends.

Memory for keys and values: the batch's rows (at most ``max_batch``, each
as long as the longest running sequence, grown 256 positions at a time,
freed when the engine is idle), one newcomer's prefill cache, and the
kept contexts (``Engine.kept_contexts``, least recently used dropped first).

The thread runs only while there is work: it ends when nothing waits or
runs, and the next request starts it again (so an unused engine holds no
thread and can be garbage-collected).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .caches.kv import BatchCache, new_cache
from .caches.reuse import Match, position_keys
from .decode import Answer, CacheSteps, DecodeJob, Steps, decode_step, run_decode
from .stream import OUT_OF_MEMORY, TextStream, failure_message, release_cached_memory
from .types import GenerationSettings, Prepared

if TYPE_CHECKING:
    from .engine import Engine
    from .static_decode import StaticDecoder

# Answers decoded together by default, per device type (see default_max_batch); any other type: 1.
DEFAULT_MAX_BATCH = {"cuda": 8, "cpu": 1}
# Prompt positions prefilled per step: bounds how long a newcomer delays the running answers' next token.
PREFILL_CHUNK = 256


@dataclass
class Request:
    """A ``stream`` call waiting for, or in, the batch."""

    prepared: Prepared
    settings: GenerationSettings
    cache_key: str | None
    started: float
    stop: tuple[str, ...]
    static: StaticDecoder | None = None  # decode on the static cache (``OneAtATime`` only)
    stream: TextStream | None = None
    # Set when admitted:
    keys: list = field(default_factory=list)
    match: Match | None = None
    steps: Steps | None = None  # the prefill's own cache, until it joins the batch
    embeds: torch.Tensor | None = None  # [1, T', D] prompt positions still to prefill
    answer: Answer | None = None
    pending: int = 0  # the sampled token the next batch step feeds
    error: str | None = None  # why it failed, once it has
    images_seen: int = 0  # its images looked up in the feature cache (each encoded at most once before admission)


def admit(engine: Engine, request: Request) -> DecodeJob:
    """Set ``request`` up to run: the kept context it reuses, its steps on that cache, the positions left to prefill."""
    prepared, stats = request.prepared, _stream(request).stats
    prompt_tokens = len(prepared.input_ids)
    stats.dropped_turns, stats.prompt_tokens = prepared.dropped_turns, prompt_tokens
    request.keys = position_keys(prepared.input_ids, prepared.image_keys, engine.prompt_format.image_id)
    match = request.match = engine._contexts.match(request.keys)
    if request.static is not None:
        request.static.take(engine._contexts.store if engine.prefix_cache else None, match)
        request.steps = request.static
    else:
        request.steps = CacheSteps(engine.model, engine._contexts.cache_for(match))
    stats.reused_tokens = match.reused
    request.embeds = engine._embeddings(prepared, match.reused)
    fmt, settings = engine.prompt_format, request.settings
    return DecodeJob(
        embeds=request.embeds,  # [1, T - reused, D]
        steps=request.steps,
        prompt_tokens=prompt_tokens,
        max_new_tokens=min(settings.max_new_tokens, engine.context_length - prompt_tokens),
        eos_ids=() if settings.ignore_eos else (fmt.eos_id,),
        stop_strings=(*(() if settings.ignore_eos else fmt.stop_strings), *(s for s in request.stop if s)),
        decode=fmt.decode,
        settings=settings,
    )


def keep(engine: Engine, request: Request, fed: list[int], cache: Any) -> None:
    """Keep a finished answer's context (its prompt and the ``fed`` tokens in ``cache``) for prefix reuse."""
    if engine.prefix_cache and request.match is not None:
        _stream(request).stats.evicted_contexts = engine._contexts.keep(
            request.match, request.keys + fed, cache, len(request.prepared.input_ids), request.cache_key)


def _stream(request: Request) -> TextStream:
    assert request.stream is not None  # set by submit
    return request.stream


class OneAtATime:
    """One answer at a time: each on its own thread (or the compiled decoder's worker), under the engine lock."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def submit(self, request: Request, stream: TextStream) -> None:
        request.stream = stream
        if request.static is not None:
            request.static.worker.submit(lambda: self._work(request))
        else:
            threading.Thread(target=self._work, args=(request,), name="dsvl-generate", daemon=True).start()

    def _work(self, request: Request) -> None:
        error = None
        try:
            with self.engine._lock:
                out_of_memory = False
                try:
                    self._generate(request)
                except Exception as exc:  # noqa: BLE001 - any crash must reach the caller, not kill the app
                    out_of_memory = isinstance(exc, OUT_OF_MEMORY)
                    error = failure_message(exc)
                if out_of_memory:  # here the traceback, and with it the failed turn's tensors, is gone
                    release_cached_memory()
        finally:
            _stream(request).end(error)  # after the lock is released: a caller that waited may start the next one

    def _generate(self, request: Request) -> None:
        """Prefill the prompt positions the kept context lacks, decode one token per step, keep the context."""
        engine, static = self.engine, request.static
        job = admit(engine, request)
        fed = run_decode(engine.model, job, _stream(request), request.started)
        if static is not None and static.note and engine.info.compiled:
            engine.info.compiled, engine.info.compile_note = False, static.note
        assert request.steps is not None and request.match is not None  # set by admit
        keep(engine, request, fed, request.steps.cache)
        if static is not None and engine.prefix_cache:
            static.owner = request.match.target


class Scheduler:
    """Owns the running batch of one engine; see the module's docstring."""

    def __init__(self, engine: Engine, max_batch: int):
        self.engine = engine
        self.max_batch = max_batch
        self._waiting: deque[Request] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._filling: Request | None = None  # the newcomer being prefilled
        self._running: list[Request] = []  # index = its row in the batch cache
        self._batch = BatchCache(max_batch)

    # -- callers' side -----------------------------------------------------------
    def submit(self, request: Request, stream: TextStream) -> None:
        request.stream = stream
        with self._cond:
            self._waiting.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dsvl-batch", daemon=True)
                self._thread.start()

    def counts(self) -> tuple[int, int]:
        """(running, waiting): sequences in the batch or being prefilled, and requests not yet admitted."""
        with self._cond:
            return len(self._running) + (self._filling is not None), len(self._waiting)

    # -- the scheduler thread ----------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                if not (self._waiting or self._running or self._filling):
                    self._thread = None
                    return
            try:
                # All of a step in inference mode: the batch's buffers, grown in a decode step, are inference
                # tensors, which may not be written outside it (a newcomer joining after the running answers had
                # passed a chunk of the cache failed them all, and was itself left waiting for ever).
                with self.engine._lock, torch.inference_mode():
                    self._step()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive it, or every later request would hang
                self._fail_all(failure_message(exc))

    def _step(self) -> None:
        self._drop_cancelled()
        self._prefill()
        if self._running:
            self._decode()

    def _drop_cancelled(self) -> None:
        with self._cond:
            waiting = list(self._waiting)
        # Checked out of the lock: a caller's cancel event is theirs to make slow, not a block on submit().
        waiting = [r for r in waiting if _stream(r).cancelled()]
        with self._cond:
            for request in waiting:
                self._waiting.remove(request)
        for request in waiting:
            assert request.stream is not None
            stats = request.stream.stats
            stats.prompt_tokens, stats.dropped_turns = len(request.prepared.input_ids), request.prepared.dropped_turns
            stats.stop_reason = "cancelled"
            request.stream.end()
        if self._filling is not None and _stream(self._filling).cancelled():
            filling, self._filling = self._filling, None
            self._end(filling, None, cancelled=True)  # its prefill never finished: nothing is kept
        for row in sorted((row for row, r in enumerate(self._running) if _stream(r).cancelled()), reverse=True):
            self._leave(row, cancelled=True)

    def _prefill(self) -> None:
        request = self._filling
        if request is None:
            if len(self._running) >= self.max_batch:
                return
            with self._cond:
                if not self._waiting:
                    return
                request = self._waiting.popleft()
            self._filling = request
        try:
            with torch.inference_mode():
                if request.steps is None:
                    if self._encode_one_image(request):
                        return  # one image per step; the prompt's prefill starts once all are encoded
                    self._admit(request)
                assert request.steps is not None and request.embeds is not None and request.answer is not None
                chunk, request.embeds = request.embeds[:, :PREFILL_CHUNK], request.embeds[:, PREFILL_CHUNK:]
                logits = request.steps.prefill(chunk)
                if request.embeds.shape[1]:
                    return  # more of the prompt next step
                self._filling = None
                token = request.answer.take(logits)
        except Exception as exc:  # noqa: BLE001 - one request's failure ends that request only
            self._filling = None
            request.error = failure_message(exc)
            out_of_memory = isinstance(exc, OUT_OF_MEMORY)
        else:
            out_of_memory = False
        if request.error is not None:
            request.steps = request.embeds = None
            self._end(request, None)
            if out_of_memory:  # out of the except block: the traceback no longer holds the failed tensors
                release_cached_memory()
            return
        steps = request.steps
        assert steps is not None  # prefilled above
        if token is None:  # ended at its first token: keep the prefilled prompt for its next turn
            self._end(request, steps.cache)
            return
        request.pending = token
        try:
            self._batch.add(steps.cache)
        except Exception as exc:  # noqa: BLE001 - not joined (out of memory): this request ends, its stream too
            request.error, request.steps = failure_message(exc), None
            self._end(request, None)
            return
        request.steps = None  # the batch row holds it now
        self._running.append(request)

    def _encode_one_image(self, request: Request) -> bool:
        """Run one of the newcomer's images not yet in the feature cache through the vision tower; False if none.

        Without the cache (``prefix_cache=False``) its images are encoded together when it is admitted.
        """
        engine = self.engine
        if not engine.prefix_cache:
            return False
        keys = request.prepared.image_keys
        # Each image once: with more images than the cache holds, one encoded here may be dropped again.
        while request.images_seen < len(keys):
            index = request.images_seen
            request.images_seen += 1
            if not engine._images.encoded(request.prepared, index):
                engine._images.features_of(engine.model, request.prepared, [index])
                return True
        return False

    def _admit(self, request: Request) -> None:
        """Match a kept context, embed the positions it lacks, set up the answer."""
        job = admit(self.engine, request)
        request.answer = Answer(job, _stream(request), request.started, self.engine.model.device)

    def _decode(self) -> None:
        try:
            with torch.inference_mode():
                logits = decode_step(self.engine.model, self._batch, [r.pending for r in self._running])
        except Exception as exc:  # noqa: BLE001 - a failed batch step fails the sequences in it
            self._fail_batch(failure_message(exc))
            out_of_memory = isinstance(exc, OUT_OF_MEMORY)
        else:
            out_of_memory = False
        if not self._running:
            if out_of_memory:
                release_cached_memory()
            return
        ended = []
        for row, request in enumerate(self._running):
            assert request.answer is not None
            request.answer.fed.append(request.pending)
            try:
                with torch.inference_mode():
                    token = request.answer.take(logits[row : row + 1])
            except Exception as exc:  # noqa: BLE001 - a sampling failure ends that request only
                request.error = failure_message(exc)
                token = None
            if token is None:
                ended.append(row)
            else:
                request.pending = token
        for row in reversed(ended):  # highest first: a removal moves only the last row, never a lower one
            self._leave(row)

    # -- leaving -------------------------------------------------------------------
    def _leave(self, row: int, *, cancelled: bool = False) -> None:
        """``row``'s sequence leaves the batch now: its cache copied out to be kept, its stream ended."""
        request = self._running[row]
        kept = None
        if self.engine.prefix_cache:
            kept = self._batch.copy_out(row, new_cache(self.engine.model))
        self._batch.remove(row)
        self._running[row] = self._running[-1]
        self._running.pop()
        self._end(request, kept, cancelled=cancelled)

    def _end(self, request: Request, cache: Any, *, cancelled: bool = False) -> None:
        """End ``request``'s stream; keep ``cache`` (prompt + fed tokens) as its context unless it failed."""
        stream = _stream(request)
        if request.error is not None:
            stream.end(request.error)
            return
        answer = request.answer
        if answer is not None:
            if cancelled:
                answer.reason = "cancelled"
            answer.finish()
            if cache is not None:
                keep(self.engine, request, answer.fed, cache)
        else:
            stream.stats.stop_reason = "cancelled"
        stream.end()

    def _fail_batch(self, message: str) -> None:
        running, self._running = self._running, []
        self._batch = BatchCache(self.max_batch)
        for request in running:
            _stream(request).end(message)

    def _fail_all(self, message: str) -> None:
        """After an unexpected failure of a step: end what was running (waiting requests go on)."""
        filling, self._filling = self._filling, None
        if filling is not None:
            _stream(filling).end(message)
        self._fail_batch(message)
        release_cached_memory()  # whatever the failed step left, out of its except block


def default_max_batch(device: torch.device, *, compile: bool = False) -> int:
    """How many answers decode together when the caller does not say (``load(max_batch=None)``, the CLI's default).

    8 on CUDA, where one decode step reads every weight once for the whole
    batch; 1 on the CPU, where ``dsvl_tui.bench.batch`` measured (2 shared
    cores) 2.1-2.9x the throughput of one stream for 4-8 streams with 4
    layers, but only 1.2-1.6x with the full-size 1.3B in fp32 (a [n, D]
    float32 matmul costs 2-3x the time of a [1, D] one there: the weights'
    reads are not shared as on a GPU), each stream at 0.2-0.6x its speed
    alone, and nothing gained for one user (a server for several can ask
    for ``--max-batch 4``); and 1 with ``compile``, whose CUDA graphs are
    recorded for one sequence.
    """
    if compile:
        return 1
    return DEFAULT_MAX_BATCH.get(device.type, 1)
