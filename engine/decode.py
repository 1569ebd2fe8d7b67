"""From prompt embeddings to tokens: prefill, one decode step, sampling.

- ``Steps`` runs the model on ONE conversation's KV cache: ``prefill`` a
  chunk of prompt embeddings, ``next`` one token fed back (``CacheSteps``
  on a growing cache; ``static_decode.StaticDecoder`` on the static one).
- ``decode_step`` runs ONE forward for every sequence of the running batch
  (``caches.kv.BatchCache``), each at its own position.
- ``Answer`` is one answer being decoded: it samples each next token from
  that step's logits with its own settings (``Sampler``: transformers'
  logits processors, the same ones upstream's ``generate`` call applies),
  streams its text, and decides when it ends (EOS, a stop string, the token
  budget, a cancel, read at every step).
- ``run_decode`` is the loop for one conversation alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from .detokenize import IncrementalDecoder, StopStringFilter
from .types import GenerationSettings, StopReason

if TYPE_CHECKING:
    from .caches.kv import BatchCache
    from .stream import TextStream


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


@dataclass
class DecodeJob:
    """Everything one answer needs, prepared before its prefill starts."""

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

    cache: Any  # what holds the conversation's keys and values, kept as its context when the answer ends

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


def decode_step(model, batch: BatchCache, tokens: Sequence[int]) -> torch.Tensor:
    """One forward for the whole running batch: row ``r`` is fed ``tokens[r]``; returns the logits [n, V].

    Each row attends to its own positions only (``BatchCache.step_inputs``
    masks the others' padding) and then holds one more position.
    """
    ids = torch.tensor([[token] for token in tokens], device=model.device)
    embeds = model.language_model.get_input_embeddings()(ids)  # [n, 1, D]
    positions, mask = batch.step_inputs(embeds.dtype)
    logits, _ = model.forward_embeds(embeds, batch, logits_to_keep=1, positions=positions, mask=mask)
    batch.advance()
    return logits[:, -1]
