"""Decoding on one static KV cache, the decode step optionally compiled (CUDA graphs).

``engine.load(..., compile=True)`` sets this up on CUDA. CUDA graphs replay
fixed kernels on fixed addresses, so everything the decode step touches
must keep its shape and place from one token to the next: a transformers
``StaticCache`` sized to the context window holds the keys and values, and
the token and its position go in as [1, 1] tensors refilled in place. The
step is compiled and warmed up once, while the model loads; turns, panes
and prompts of any length then replay the same graphs. Prefill stays eager
(its length changes every turn) and writes into the same cache at the
positions after the reused prefix.

How this meets prefix reuse (``caches.reuse``): there is ONE static cache, not
one per conversation, because each is as large as the whole context window
(0.8 GB for the 1.3B model at 4096 tokens, 2 GB for the 7B) and mostly
empty. The context that generated last stays *resident*: its stored
context points at the static cache itself, so a prompt that continues it
(the longest-prefix match, see ``reuse.best_match``) copies nothing.
Before any other prompt uses the cache, the resident context is copied out
into a compact ``DynamicCache`` cropped to its length (what the eager path
stores anyway), and the matched context's reusable prefix is copied in.
Memory is therefore bounded by one static cache plus at most
``MAX_CACHED_CONTEXTS - 1`` compact contexts, and a pane switch costs at
most two device-to-device copies of one context (out, then in).

With ``compile_options=None`` the same path runs eagerly, which is how the
tests check it on the CPU.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Hashable
from typing import Any

import torch

from .caches.kv import new_cache
from .caches.reuse import LruStore, Match, copy_cache, keys_values
from .checkpoint import LoadProgress, ProgressCallback
from .stream import OUT_OF_MEMORY, Worker

# torch.compile options for CUDA: CUDA graphs (reduce-overhead) need the whole step in one graph.
CUDA_COMPILE_OPTIONS = {"mode": "reduce-overhead", "fullgraph": True}
# The first call compiles, the second records the CUDA graphs, the third replays them.
WARM_UP_STEPS = 3


# Free GPU memory wanted beyond the static cache itself before compiling (warm-up activations, CUDA graph pool).
COMPILE_HEADROOM_BYTES = 512 * 2**20


def static_cache_bytes(config, max_len: int, dtype: torch.dtype) -> int:
    """Bytes of the static KV cache (keys and values of every layer for ``max_len`` positions) for a Llama config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * kv_heads * head_dim * max_len * itemsize


def compile_unsupported(device: torch.device, cache_bytes: int = 0) -> str | None:
    """The whole "may ``load(compile=True)`` compile here, and if not why" decision.

    Returns None (compiling may be tried; a compiler failure while warming
    up still falls back, see ``Engine.use_static_decode``) or a one-line
    note saying why not. It never raises: a probe that fails (a broken
    driver, a half-installed triton) is itself the reason. ``cache_bytes``
    is the size of the static KV cache to allocate (``static_cache_bytes``);
    when the GPU has less free memory than that, compiling is not tried.
    """
    try:
        return _compile_unsupported(device, cache_bytes)
    except Exception as exc:  # noqa: BLE001 - a failing probe must not stop the model from loading
        return ("could not check for CUDA/torch.compile support "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})")


def _compile_unsupported(device: torch.device, cache_bytes: int) -> str | None:
    if device.type != "cuda":
        return "needs CUDA"
    if not torch.cuda.is_available():
        return "needs CUDA, and no CUDA GPU is available"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 7:  # triton, which torch.compile generates GPU code with, needs Volta or newer
        return f"needs a GPU of compute capability 7.0 or newer, this one has {major}.{minor}"
    import torch._dynamo as dynamo  # imported here: it is slow to import and only CUDA needs it

    if not dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python or platform"
    if dynamo.config.disable:
        return "torch.compile is disabled (TORCHDYNAMO_DISABLE is set)"
    if importlib.util.find_spec("triton") is None:
        return "needs triton, which this torch install lacks"
    from torch.utils._triton import has_triton

    if not has_triton():
        return "triton is installed but cannot build kernels for this GPU (a triton that does not match this torch?)"
    if cache_bytes:
        free, _total = torch.cuda.mem_get_info(device)
        if free < cache_bytes + COMPILE_HEADROOM_BYTES:
            return (f"not enough free GPU memory for a static KV cache of {cache_bytes / 2**30:.2f} GiB "
                    f"({free / 2**30:.2f} GiB free)")
    return None


def decode_one_token(model, cache, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """token, position: [1, 1] -> logits [1, V] of that position, its keys and values written into ``cache``."""
    embeds = model.language_model.get_input_embeddings()(token)
    logits, _ = model.forward_embeds(embeds, cache, logits_to_keep=1, positions=position)
    return logits[:, -1, :]


class StaticDecoder:
    """The static KV cache, the decode step on it, and which kept context it holds.

    It implements ``decode.Steps`` for the conversation set up by ``take``.
    Every call runs on ``worker`` (see ``stream.Worker`` for why).
    """

    def __init__(self, model, max_len: int, compile_options: dict[str, Any] | None = None):
        from transformers import StaticCache

        self.model = model
        self.max_len = max_len
        self.cache = StaticCache(config=model.language_model.config, max_cache_len=max_len)
        self.length = 0  # positions of the cache in use
        self.owner: Hashable | None = None  # the store key of the kept context that is this cache
        self.compiled = compile_options is not None
        self.note: str | None = None  # why compiled decoding was dropped after load, if it was
        self._cuda_graphs = compile_options is not None and compile_options.get("mode") == "reduce-overhead"
        self._step = (torch.compile(decode_one_token, **compile_options) if compile_options is not None
                      else decode_one_token)
        device = model.device
        # Fixed places for the step's inputs: refilled in place, so CUDA graphs read them where they were recorded.
        self._token = torch.zeros((1, 1), dtype=torch.long, device=device)
        self._position = torch.zeros((1, 1), dtype=torch.long, device=device)
        if self.compiled:
            torch._dynamo.mark_static_address(self._token)
            torch._dynamo.mark_static_address(self._position)
        self.worker = Worker("dsvl-decode")

    # -- set-up ----------------------------------------------------------------
    def warm_up(self, progress: ProgressCallback | None = None) -> None:
        """Allocate the cache and (if compiled) compile and record the step; on the worker thread."""

        def run() -> None:
            what = ("compiling the decode step (CUDA graphs; longest the first time)" if self.compiled
                    else "allocating the static KV cache")
            with torch.inference_mode():
                self._set_length(0)
                # One prefilled position allocates every layer's static tensors (transformers does it on first use).
                start = torch.zeros((1, 1), dtype=torch.long, device=self.model.device)
                self.prefill(self.model.language_model.get_input_embeddings()(start))
                for done in range(WARM_UP_STEPS):
                    if progress is not None:
                        progress(LoadProgress("compile", done, WARM_UP_STEPS, what))
                    self.next(0, fall_back=False)  # a failure here means no compiled decoding at all
                self._set_length(0)
            if progress is not None:
                progress(LoadProgress("compile", WARM_UP_STEPS, WARM_UP_STEPS, what))

        self.worker.call(run)

    def close(self) -> None:
        self.worker.stop()

    def nbytes(self) -> int:
        """Memory the static cache takes (allocated during warm-up)."""
        return sum(t.numel() * t.element_size() for layer in self.cache.layers
                   for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
                   if isinstance(t, torch.Tensor))

    # -- which conversation the cache holds ------------------------------------
    @torch.inference_mode()  # the cache's tensors are inference tensors: only touched in that mode
    def take(self, contexts: LruStore | None, match: Match) -> int:
        """Fill the cache with ``match``'s reusable prefix (see ``reuse.best_match``); returns its length.

        ``contexts`` is the engine's store of kept contexts (None: no
        reuse). The resident context (``owner``) is whichever stored context
        is this cache; it is copied out, compactly, before being
        overwritten, unless this prompt takes it over. A context taken over
        leaves the store (the engine puts the result back when the
        generation succeeds, so a failed one leaves nothing stale); one
        branched from stays, and only its prefix is copied in.
        """
        resident_key, self.owner = self.owner, None  # from here on the cache is being rewritten
        if contexts is None:
            self._set_length(0)
            return 0
        resident = contexts.peek(resident_key) if resident_key is not None else None
        if resident is not None and resident.cache is not self.cache:
            resident = None
        cached, reused = match.context, match.reused
        if resident is None or cached is not resident or not match.takes_over:
            if resident is not None:  # keep it, compactly, before the cache is overwritten
                resident.cache = self._copy_out(len(resident.keys))
            if cached is not None and reused > 0 and cached is not resident:
                self._copy_in(cached.cache, reused)
            # (a branch off the resident context finds its prefix still in place: _copy_out copied, not moved)
        if match.source is not None and match.takes_over:
            contexts.pop(match.source)
        self._set_length(reused)
        return reused

    def _copy_out(self, length: int):
        """A ``DynamicCache`` holding the first ``length`` positions (copies, never views of the static cache)."""
        return copy_cache(self.cache, length, new_cache(self.model))

    def _copy_in(self, stored, length: int) -> None:
        for layer, source in zip(self.cache.layers, stored.layers, strict=True):
            (keys, values), (source_keys, source_values) = keys_values(layer), keys_values(source)
            keys[:, :, :length].copy_(source_keys[:, :, :length])
            values[:, :, :length].copy_(source_values[:, :, :length])

    def _set_length(self, length: int) -> None:
        self.length = length
        # transformers 5 static layers write at their own counter (a tensor, so the step never recompiles);
        # transformers 4 ones write at the ``cache_position`` the model is given instead.
        for layer in self.cache.layers:
            counter = getattr(layer, "cumulative_length", None)
            if isinstance(counter, torch.Tensor):
                counter.fill_(length)

    # -- decode.Steps -----------------------------------------------------------
    def prefill(self, embeds: torch.Tensor) -> torch.Tensor:
        """[1, T, D] embeddings of the positions after ``length`` -> logits [1, V] of the last one (eager)."""
        count = embeds.shape[1]
        self._check_room(count)
        positions = torch.arange(self.length, self.length + count, device=embeds.device).unsqueeze(0)
        logits, _ = self.model.forward_embeds(embeds, self.cache, logits_to_keep=1, positions=positions)
        self.length += count
        return logits[:, -1, :]

    def next(self, token: int, *, fall_back: bool = True) -> torch.Tensor:
        """Feed ``token`` at the next position -> its logits [1, V].

        If the compiled step fails (and ``fall_back``), this step and all
        later ones run eagerly and ``note`` says why.
        """
        self._check_room(1)
        self._token.fill_(token)
        self._position.fill_(self.length)
        if not self.compiled:
            logits = self._step(self.model, self.cache, self._token, self._position)
        else:
            try:
                logits = self._compiled_step()
            except OUT_OF_MEMORY:
                raise
            except Exception as exc:  # noqa: BLE001 - a compiler failure must not end the conversation
                if not fall_back:
                    raise
                self._step, self.compiled, self._cuda_graphs = decode_one_token, False, False
                self.note = ("torch.compile failed while decoding "
                             f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})")
                # Counters a half-run step moved go back; the position it wrote is written again.
                self._set_length(self.length)
                logits = self._step(self.model, self.cache, self._token, self._position)
        self.length += 1
        return logits

    def _compiled_step(self) -> torch.Tensor:
        if self._cuda_graphs:
            # Tells CUDA graphs the previous step's outputs are dead, so their memory is reused.
            torch.compiler.cudagraph_mark_step_begin()
        logits = self._step(self.model, self.cache, self._token, self._position)
        # A CUDA graph's output buffer is overwritten by its next replay: hand out a copy.
        return logits.clone() if self._cuda_graphs else logits

    def _check_room(self, count: int) -> None:
        # The engine caps answers to the context window, so this is an internal error if it ever fires.
        if self.length + count > self.max_len:
            raise RuntimeError(f"static KV cache overflow: {self.length} + {count} positions > {self.max_len}")
