"""The engine: load a checkpoint, turn conversations into model input, hand each answer to a runner.

The path from a prompt to a token, top down:

- ``Engine.stream`` prepares the prompt (``prepare``: prompt format,
  images through ``caches.features``) and returns a ``stream.TextStream``
  whose first iteration hands the request to a runner (``batch``).
- ``batch.Scheduler`` (``max_batch`` > 1) owns the running batch: it admits
  requests (prefix reuse: ``caches.reuse``), prefills them in chunks, and
  runs one ``decode.decode_step`` for all of them per token;
  ``batch.OneAtATime`` (``max_batch`` 1, and compiled decoding) runs one
  answer at a time (``decode.run_decode``).
- ``decode.Answer`` samples each token and pushes its text into the stream.

``compile`` (``static_decode``: a static KV cache, CUDA graphs) decodes one
sequence at a time: with ``max_batch`` > 1 it is not used, batches decode
eagerly (no CUDA graphs are captured for batch sizes) and
``info.compile_note`` says so; ``default_max_batch`` is 1 with ``compile``.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .batch import OneAtATime, Request, Scheduler, default_max_batch
from .caches.features import ImageCache
from .caches.reuse import KeptContexts, LruStore
from .checkpoint import LoadProgress, ProgressCallback
from .errors import ContextOverflowError
from .images import ImagePreprocessor
from .model import DeepSeekVLModel, build_model
from .prompt import ImageSlot, PromptFormat
from .resolve import pick_device, pick_dtype, resolve_model
from .spec import read_spec
from .stream import OUT_OF_MEMORY, TextStream
from .types import EngineInfo, GenerationSettings, Message, Prepared, Variant, parse_quantize

if TYPE_CHECKING:
    from .static_decode import StaticDecoder

DEFAULT_CONTEXT_LENGTH = 4096
MAX_CACHED_CONTEXTS = 4  # contexts whose KV cache is kept for prefix reuse (least recently used dropped first)
MAX_CACHED_IMAGES = 64


def _variant_of(model: str, folder: Path) -> Variant:
    # Only the model's own name counts (".../deepseek-vl-7b-base"), not its parent folders.
    names = f"{model.rstrip('/').rsplit('/', 1)[-1]} {folder.name}".lower()
    return "base" if names.endswith(("-base", "_base")) or "-base " in names or "_base " in names else "chat"


class Engine:
    """A loaded DeepSeek-VL model. Use ``engine.load()`` to make one.

    With ``max_batch`` 1 one generation runs at a time: ``stream`` calls
    made while another runs wait for it. With more, up to ``max_batch``
    answers decode together, one forward per token for all of them (see
    ``batch``), and the rest wait their turn.
    """

    def __init__(self, model: DeepSeekVLModel, prompt: PromptFormat, preprocess: ImagePreprocessor,
                 info: EngineInfo, context_length: int, *, prefix_cache: bool = True, max_batch: int = 1):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.model = model
        self.prompt_format = prompt
        self.preprocess = preprocess
        self.info = info
        self.context_length = context_length
        self.prefix_cache = prefix_cache
        self._lock = threading.Lock()
        self.max_batch = max_batch
        # Each running conversation can keep its context for its next turn.
        self.kept_contexts = max(MAX_CACHED_CONTEXTS, max_batch)
        self._contexts = KeptContexts(model, self.kept_contexts, enabled=prefix_cache)
        self._images = ImageCache(preprocess, MAX_CACHED_IMAGES, enabled=prefix_cache)
        self._one_at_a_time = OneAtATime(self)
        # Owns the running batch (no thread until a stream starts); None: one answer at a time, under the lock.
        self._scheduler = Scheduler(self, max_batch) if max_batch > 1 else None
        self._static: StaticDecoder | None = None  # set once use_static_decode() succeeded

    @property
    def vision_calls(self) -> int:
        """Images run through the vision tower (for tests and benchmarks)."""
        return self._images.vision_calls

    @vision_calls.setter
    def vision_calls(self, value: int) -> None:
        self._images.vision_calls = value

    @property
    def _features(self) -> LruStore:
        return self._images.features

    # -- input -------------------------------------------------------------
    def prepare(self, messages: Sequence[Message], *, system: str | None = None, reserve: int = 0) -> Prepared:
        """Build upstream's input ids (and preprocess images) for ``messages``.

        If the conversation does not fit in the context window with
        ``reserve`` tokens left for the answer, the oldest whole turns are
        dropped (with their images); ``Prepared.dropped_turns`` says how many.
        """
        messages = list(messages)
        if not messages:
            raise ValueError("prepare() needs at least one message")
        fmt = self.prompt_format
        # A turn starts at each user message; the last turn is always kept.
        turn_starts = [0] + [i for i, m in enumerate(messages) if m.role == "user" and i > 0]
        # The fewest dropped turns that fit, counted with each text run encoded once (not once per drop).
        dropped = fmt.fit(messages, system, turn_starts, self.context_length - reserve)
        kept = messages[turn_starts[dropped]:]
        pieces = fmt.pieces(kept, system)
        ids = fmt.encode(pieces)
        if len(ids) >= self.context_length:
            raise ContextOverflowError(
                f"the message needs {len(ids)} tokens but the context window is {self.context_length}; "
                "shorten it, attach fewer images, or raise the context length"
            )
        pictures = [self._images.picture(src) for m in kept for src in m.images]
        assert sum(isinstance(p, ImageSlot) for p in pieces) == len(pictures)
        return Prepared(
            input_ids=torch.tensor(ids, dtype=torch.long),
            images=[pixels for _, pixels in pictures],
            image_keys=[key for key, _ in pictures],
            prompt=fmt.render(pieces),
            dropped_turns=dropped,
        )

    @torch.inference_mode()
    def _embeddings(self, prepared: Prepared, start: int = 0) -> torch.Tensor:
        """[1, T - start, D] input embeddings of positions ``start:`` (images filled in)."""
        ids = prepared.input_ids
        image_id = self.prompt_format.image_id
        n = self.prompt_format.num_image_tokens
        slots = (ids == image_id).nonzero().flatten().tolist()
        starts = slots[::n]  # each image is n consecutive image tokens
        needed = [i for i, s in enumerate(starts) if s + n > start]
        embeds = self.model.embed(ids[start:], None, image_id)
        if needed:
            features = self._images.features_of(self.model, prepared, needed)
            for index in needed:
                first = max(starts[index], start)
                rows = features[index][first - starts[index] :]
                embeds[0, first - start : first - start + len(rows)] = rows.to(embeds.dtype)
        return embeds

    # -- output ------------------------------------------------------------
    def logits(self, prepared: Prepared) -> torch.Tensor:
        """Float32 logits for every position of ``prepared.input_ids``: [T, vocab]."""
        with self._lock, torch.inference_mode():
            logits, _ = self.model.forward_embeds(self._embeddings(prepared))
        return logits[0].float()

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings | None = None,
        *,
        system: str | None = None,
        cancel: threading.Event | None = None,
        cache_key: str | None = None,
        stop: Sequence[str] = (),
    ) -> TextStream:
        """Start generating the answer to ``messages``; iterate the result for text chunks.

        Input problems (a bad image, a turn too long for the context) raise
        here, before any compute; failures during generation end the
        iteration with ``GenerationError``. ``stats`` is final when the
        iteration ends. The prompt reuses the KV cache of whichever kept
        context shares the longest prefix with it (see ``caches.reuse``), so only
        what changed is prefilled; no key is needed. The optional
        ``cache_key`` (a pane id) labels the context this turn leaves, so
        ``forget(cache_key)`` can drop it. ``stop``: more strings that end
        the answer (never shown), besides the prompt format's own.
        """
        settings = settings or GenerationSettings()
        started = time.perf_counter()
        prepared = self.prepare(messages, system=system, reserve=settings.max_new_tokens)
        static = self._static
        request = Request(prepared, settings, cache_key, started, tuple(stop), static)
        runner = self._scheduler if self._scheduler is not None and static is None else self._one_at_a_time
        return TextStream(functools.partial(runner.submit, request), cancel)

    def set_max_batch(self, max_batch: int) -> None:
        """Change how many answers decode together, for the streams started from now on (call it while idle)."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        with self._lock:
            if self._scheduler is not None and self._scheduler.counts() != (0, 0):
                raise RuntimeError("set_max_batch() while answers are running; wait for them to end")
            self.max_batch = max_batch
            self._scheduler = Scheduler(self, max_batch) if max_batch > 1 else None
            self.kept_contexts = self._contexts.max_entries = max(MAX_CACHED_CONTEXTS, max_batch)

    def batch_counts(self) -> tuple[int, int]:
        """(running, waiting) answers of the batched scheduler; (0, 0) before any ran or with ``max_batch`` 1."""
        return self._scheduler.counts() if self._scheduler is not None else (0, 0)

    def use_static_decode(self, *, compile_options: dict | None = None,
                          progress: ProgressCallback | None = None) -> str | None:
        """Decode on one static KV cache the size of the context window (see ``static_decode``).

        ``load(compile=True)`` calls this with torch.compile options for
        CUDA; with ``compile_options=None`` the same path runs eagerly (the
        tests run it so on the CPU). Allocates the cache and warms the step
        up now. Returns None, or why it could not be set up: the engine then
        keeps decoding as before, and nothing is raised.
        """
        from .static_decode import StaticDecoder

        with self._lock:
            if self._static is not None:
                return None
            decoder: StaticDecoder | None = None
            problem: str | None = None
            try:
                decoder = StaticDecoder(self.model, self.context_length, compile_options)
                decoder.warm_up(progress)
            except OUT_OF_MEMORY:
                problem = f"not enough GPU memory for a static KV cache of {self.context_length} tokens"
            except Exception as exc:  # noqa: BLE001 - a missing compiler, an unsupported op: decode eagerly
                what = "torch.compile failed while warming up" if compile_options else "static decoding failed"
                problem = f"{what} ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
            if problem is not None:
                if decoder is not None:
                    decoder.close()
                decoder = None  # out of the except block, so no traceback keeps the static cache alive
                if self.model.device.type == "cuda":
                    torch.cuda.empty_cache()
                return problem
            assert decoder is not None  # made, since no problem was met
            self._contexts.clear()  # stored contexts were made for the other path
            self._static = decoder
            # Its thread ends with the engine; not at interpreter exit, where waking a thread that ran
            # torch code can abort the process (daemon threads are simply left blocked there).
            weakref.finalize(self, decoder.close).atexit = False
            self.info.compiled = decoder.compiled
        return None

    def forget(self, cache_key: str | None = None) -> None:
        """Drop the kept contexts labelled ``cache_key`` (or all of them)."""
        with self._lock:
            dropped = self._contexts.forget(cache_key)
            if self._static is not None and self._static.owner in dropped:
                self._static.owner = None


def load(
    model: str,
    *,
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
    revision: str | None = None,
    progress: ProgressCallback | None = None,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    variant: Variant | None = None,
    prefix_cache: bool = True,
    compile: bool = False,
    quantize: str = "none",
    max_batch: int | None = None,
) -> Engine:
    """Load a DeepSeek-VL checkpoint (hub id or local folder) and return an ``Engine``.

    ``quantize="int8"`` or ``"int4"`` stores the language model's linear
    weights in 8 or 4 bits (see ``quantize``), layer by layer as they load.
    Where the mode cannot run on the device the model loads unquantized and
    ``info.quantize_note`` says why; ``info.quantize`` is the mode in effect.

    ``compile=True`` decodes with a torch.compile'd step on a static KV cache
    (CUDA graphs), compiled and warmed up here. Where that cannot run (not
    CUDA, an old GPU, no triton, a compiler error) the engine decodes
    eagerly and ``info.compile_note`` says why; it never raises for that.

    ``max_batch`` > 1 decodes up to that many answers together (see
    ``batch``). Batches decode eagerly: no CUDA graphs are captured for
    batch sizes, so with ``max_batch`` > 1 ``compile`` is not used and
    ``info.compile_note`` says "batches decode eagerly". None: the device's
    default (``default_max_batch``: 1 with ``compile``, so asking for
    ``compile`` alone keeps compiled single-stream decoding).
    """
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, not {max_batch}")
    if context_length < 16:
        raise ValueError(f"context_length must be at least 16 tokens, not {context_length}")
    from . import quantize as quantizing

    asked_quantize = parse_quantize(quantize)  # a bad mode fails before anything loads
    started = time.perf_counter()
    folder = resolve_model(str(model), revision=revision, progress=progress)
    spec = read_spec(folder)
    chosen_device = pick_device(device)
    chosen_dtype = pick_dtype(dtype, chosen_device)
    variant = variant or _variant_of(str(model), folder)
    prompt = PromptFormat(folder, spec, variant=variant)
    try:
        preprocess = ImagePreprocessor.from_config(spec.preprocessor)
    except ValueError as exc:
        from .errors import CheckpointError

        raise CheckpointError(f"{folder / 'preprocessor_config.json'}: {exc}") from None
    if progress is not None:
        progress(LoadProgress("load", 0, None,
                              f"building model on {chosen_device} ({str(chosen_dtype).replace('torch.', '')})"))
    quantizer = quantizing.LayerQuantizer.for_load(asked_quantize, spec, chosen_device, chosen_dtype)
    out_of_memory = False
    try:
        net = build_model(spec, folder, device=chosen_device, dtype=chosen_dtype, progress=progress,
                          after_assign=quantizer.assigned if quantizer.plan.mode != "none" else None)
    except OUT_OF_MEMORY:
        out_of_memory = True
    if out_of_memory:  # out of the except block, so the half-loaded model is unreferenced and can be freed
        from .errors import EngineError
        from .stream import release_cached_memory

        release_cached_memory()
        where = "GPU memory" if chosen_device.type == "cuda" else "memory"
        raise EngineError(f"not enough {where} to load {model} on {chosen_device} in "
                          f"{str(chosen_dtype).replace('torch.', '')}; "
                          "free the GPU, pick a smaller model, or use --device cpu")
    info = EngineInfo(
        model_id=str(model), variant=variant, tower=spec.vision.kind, device=str(chosen_device),
        dtype=str(chosen_dtype).replace("torch.", ""), parameters=net.parameter_count(),
        context_length=context_length, path=str(folder), load_seconds=time.perf_counter() - started,
        quantize=quantizer.plan.mode, quantize_note=quantizer.note(), max_token_chars=prompt.max_token_chars,
        layout="transformers" if spec.layout == "converted" else "original",
    )
    if max_batch is None:
        max_batch = default_max_batch(chosen_device, compile=compile)
    eng = Engine(net, prompt, preprocess, info, context_length, prefix_cache=prefix_cache, max_batch=max_batch)
    if compile and max_batch > 1:
        info.compile_note = f"batches decode eagerly (--max-batch {max_batch})"
    elif compile:
        from . import static_decode

        # The one decision (device, capability, dynamo, triton, free memory); it returns a note, never raises.
        cache_bytes = static_decode.static_cache_bytes(net.language_model.config, context_length, chosen_dtype)
        note = static_decode.compile_unsupported(chosen_device, cache_bytes)
        if note is None:
            note = eng.use_static_decode(compile_options=static_decode.CUDA_COMPILE_OPTIONS, progress=progress)
        info.compiled, info.compile_note = note is None, note
        info.load_seconds = time.perf_counter() - started
    if progress is not None:
        how = ""
        if compile:
            how = ("; compiled decode" if info.compiled
                   else f"; compile: not used ({info.compile_note}), decoding eagerly")
        if info.quantize != "none":
            how = f"; {info.quantize} weights{how}"
        if info.quantize_note:
            how = f"{how}; quantize: {info.quantize_note}"
        progress(LoadProgress("ready", 1, 1, f"{info.model_id} ready on {info.device} ({info.dtype}){how}"))
    return eng
