"""The engine: load a checkpoint, turn conversations into input, stream answers."""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .batch import Request, Scheduler, default_max_batch
from .checkpoint import LoadProgress, ProgressCallback
from .errors import ContextOverflowError
from .generate import OUT_OF_MEMORY, CacheSteps, DecodeJob, TextStream, run_decode
from .images import ImagePreprocessor, image_key, load_image
from .kv_cache import new_cache
from .model import DeepSeekVLModel, build_model
from .prompt import ImageSlot, PromptFormat
from .resolve import pick_device, pick_dtype, resolve_model
from .reuse import CachedContext, LruStore, Match, best_match, copy_cache, crop_cache, position_keys
from .spec import read_spec
from .types import (
    EncodedImage,
    EngineInfo,
    GenerationSettings,
    GenerationStats,
    Message,
    Prepared,
    Variant,
    parse_quantize,
)

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
        self._contexts = LruStore(self.kept_contexts)
        # Owns the running batch (no thread until a stream starts); None: one answer at a time, under the lock.
        self._scheduler = Scheduler(self, max_batch) if max_batch > 1 else None
        self._stored = 0  # numbers the store keys of kept contexts
        self._features = LruStore(MAX_CACHED_IMAGES)
        self._pictures = LruStore(MAX_CACHED_IMAGES)  # (path, mtime, size) or file bytes' digest -> (key, pixels)
        self._pictures_lock = threading.Lock()  # prepare() runs on callers' threads
        self.vision_calls = 0  # images run through the vision tower (for tests and benchmarks)
        self._static: StaticDecoder | None = None  # set once use_static_decode() succeeded

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
        pictures = [self._picture(src) for m in kept for src in m.images]
        assert sum(isinstance(p, ImageSlot) for p in pieces) == len(pictures)
        return Prepared(
            input_ids=torch.tensor(ids, dtype=torch.long),
            images=[pixels for _, pixels in pictures],
            image_keys=[key for key, _ in pictures],
            prompt=fmt.render(pieces),
            dropped_turns=dropped,
        )

    def _picture(self, source) -> tuple[str, torch.Tensor]:
        """Content key and preprocessed pixels of one image.

        Every turn prepares the whole history (and front ends prepare it again to
        measure the context), so an unchanged file, or the same bytes sent again
        by a stateless client, is decoded and resized once.
        """
        stamp: tuple | None = None
        if self.prefix_cache and isinstance(source, EncodedImage):
            stamp = ("bytes", source.digest)
        elif self.prefix_cache and isinstance(source, (str, os.PathLike)):
            try:
                stat = os.stat(source)
                stamp = (os.path.abspath(source), stat.st_mtime_ns, stat.st_size)
            except OSError:
                pass  # load_image gives the clear error
        if stamp is not None:
            with self._pictures_lock:
                hit = self._pictures.get(stamp)
            if hit is not None:
                return hit
        image = load_image(source)
        picture = (image_key(image), self.preprocess(image))
        if stamp is not None:
            with self._pictures_lock:
                self._pictures.put(stamp, picture)
        return picture

    def _image_features(self, prepared: Prepared, needed: list[int]) -> dict[int, torch.Tensor]:
        """Aligned features [T_img, D] of the images at ``needed`` indexes, from the cache where possible."""
        out: dict[int, torch.Tensor] = {}
        missing = []
        for index in needed:
            cached = self._features.get(prepared.image_keys[index]) if self.prefix_cache else None
            if cached is None:
                missing.append(index)
            else:
                out[index] = cached
        if missing:
            # Text-only prompts never get here: upstream encodes a blank image for them.
            encoded = self.model.encode_images(torch.stack([prepared.images[i] for i in missing]))
            self.vision_calls += len(missing)
            for index, features in zip(missing, encoded, strict=True):
                if self.prefix_cache:
                    self._features.put(prepared.image_keys[index], features)
                out[index] = features
        return out

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
            features = self._image_features(prepared, needed)
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
        context shares the longest prefix with it (see ``reuse``), so only
        what changed is prefilled; no key is needed. The optional
        ``cache_key`` (a pane id) labels the context this turn leaves, so
        ``forget(cache_key)`` can drop it. ``stop``: more strings that end
        the answer (never shown), besides the prompt format's own.
        """
        settings = settings or GenerationSettings()
        started = time.perf_counter()
        prepared = self.prepare(messages, system=system, reserve=settings.max_new_tokens)
        stop = tuple(stop)
        static = self._static
        scheduler = self._scheduler
        if scheduler is not None and static is None:
            request = Request(prepared, settings, cache_key, started, stop)
            return TextStream(None, cancel, None, submit=functools.partial(scheduler.submit, request))
        generate = functools.partial(self._generate, prepared, settings, cache_key, static, started, stop)
        return TextStream(generate, cancel, self._lock, worker=static.worker if static is not None else None)

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

    def _decode_job(self, prepared: Prepared, settings: GenerationSettings, embeds: torch.Tensor, steps,
                    stop: tuple[str, ...]) -> DecodeJob:
        fmt = self.prompt_format
        prompt_tokens = len(prepared.input_ids)
        return DecodeJob(
            embeds=embeds,  # [1, T - reused, D]
            steps=steps,
            prompt_tokens=prompt_tokens,
            max_new_tokens=min(settings.max_new_tokens, self.context_length - prompt_tokens),
            eos_ids=() if settings.ignore_eos else (fmt.eos_id,),
            stop_strings=(*(() if settings.ignore_eos else fmt.stop_strings), *(s for s in stop if s)),
            decode=fmt.decode,
            settings=settings,
        )

    def _keep(self, match: Match, keys: list, cache: object, prompt_tokens: int, cache_key: str | None,
              stats: GenerationStats) -> None:
        """Keep a finished answer's context (prompt and answer fed back) for prefix reuse."""
        context = CachedContext(keys, cache, prompt_length=prompt_tokens, label=cache_key)
        stats.evicted_contexts = len(self._contexts.put(match.target, context))

    def _generate(self, prepared: Prepared, settings: GenerationSettings, cache_key: str | None,
                  static: StaticDecoder | None, started: float, stop: tuple[str, ...], stream: TextStream) -> None:
        """One answer, on the generation thread (engine lock held), from the prepared prompt to its last token.

        Take the kept KV cache sharing the longest prefix with this prompt
        (``reuse.best_match``); embed the positions it lacks (images filled
        in); prefill them and decode one token per step (``run_decode``), streaming text
        into ``stream``; keep the cache, now holding prompt and answer, for
        the next turn.
        """
        fmt = self.prompt_format
        prompt_tokens = len(prepared.input_ids)
        stats = stream.stats
        stats.dropped_turns, stats.prompt_tokens = prepared.dropped_turns, prompt_tokens
        keys = position_keys(prepared.input_ids, prepared.image_keys, fmt.image_id)
        match, steps = self._take_cache(keys, static)
        reused = stats.reused_tokens = match.reused
        job = self._decode_job(prepared, settings, self._embeddings(prepared, reused), steps, stop)
        fed = run_decode(self.model, job, stream, started)  # prefill, then one token per step
        if static is not None and static.note and self.info.compiled:
            self.info.compiled, self.info.compile_note = False, static.note
        if self.prefix_cache:
            self._keep(match, keys + fed, steps.cache, prompt_tokens, cache_key, stats)
            if static is not None:
                static.owner = match.target

    def _take_cache(self, keys: list, static: StaticDecoder | None) -> tuple[Match, StaticDecoder | CacheSteps]:
        """(which kept context this prompt reuses, the steps that run on its cache)."""
        self._stored += 1
        match = (best_match(self._contexts, keys, self._stored) if self.prefix_cache
                 else Match(None, None, 0, False, self._stored))
        if static is not None:
            static.take(self._contexts if self.prefix_cache else None, match)
            return match, static
        return match, CacheSteps(self.model, self._reusable_cache(match))

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

    def _reusable_cache(self, match: Match) -> object:
        """A growing cache holding ``match.reused`` positions of the matched context."""
        if match.context is None or match.source is None:
            return new_cache(self.model)
        if match.takes_over:
            # Taken out of the store while in use: a failed generation leaves no half-written cache behind.
            self._contexts.pop(match.source)
            crop_cache(match.context.cache, match.reused)
            return match.context.cache
        return copy_cache(match.context.cache, match.reused, new_cache(self.model))

    def forget(self, cache_key: str | None = None) -> None:
        """Drop the kept contexts labelled ``cache_key`` (or all of them)."""
        with self._lock:
            dropped = [key for key, context in self._contexts.newest_first()
                       if cache_key is None or context.label == cache_key]
            for key in dropped:
                self._contexts.pop(key)
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
    ``batch``); batches decode eagerly, so ``compile`` is then not used
    (``info.compile_note`` says so). None: the device's default
    (``default_max_batch``).
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
        progress(LoadProgress("load", 0, None, f"building model on {chosen_device} ({str(chosen_dtype).replace('torch.', '')})"))
    quantizer = quantizing.LayerQuantizer.for_load(asked_quantize, spec, chosen_device, chosen_dtype)
    out_of_memory = False
    try:
        net = build_model(spec, folder, device=chosen_device, dtype=chosen_dtype, progress=progress,
                          after_assign=quantizer.assigned if quantizer.plan.mode != "none" else None)
    except OUT_OF_MEMORY:
        out_of_memory = True
    if out_of_memory:  # out of the except block, so the half-loaded model is unreferenced and can be freed
        from .errors import EngineError
        from .generate import release_cached_memory

        release_cached_memory()
        where = "GPU memory" if chosen_device.type == "cuda" else "memory"
        raise EngineError(f"not enough {where} to load {model} on {chosen_device} in {str(chosen_dtype).replace('torch.', '')}; "
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
            how = "; compiled decode" if info.compiled else f"; compile: not used ({info.compile_note}), decoding eagerly"
        if info.quantize != "none":
            how = f"; {info.quantize} weights{how}"
        if info.quantize_note:
            how = f"{how}; quantize: {info.quantize_note}"
        progress(LoadProgress("ready", 1, 1, f"{info.model_id} ready on {info.device} ({info.dtype}){how}"))
    return eng
