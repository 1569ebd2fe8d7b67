"""The engine: load a checkpoint, turn conversations into input, stream answers."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Sequence

import torch

from .checkpoint import LoadProgress, ProgressCallback
from .errors import ContextOverflowError
from .generate import DecodeJob, TextStream, run_decode
from .images import ImagePreprocessor, image_key, load_image
from .model import DeepSeekVLModel, build_model
from .prompt import ImageSlot, PromptFormat
from .resolve import pick_device, pick_dtype, resolve_model
from .spec import read_spec
from .types import EngineInfo, GenerationSettings, Message, Prepared

DEFAULT_CONTEXT_LENGTH = 4096


def _variant_of(model: str, folder: Path) -> str:
    # Only the model's own name counts (".../deepseek-vl-7b-base"), not its parent folders.
    names = f"{model.rstrip('/').rsplit('/', 1)[-1]} {folder.name}".lower()
    return "base" if names.endswith(("-base", "_base")) or "-base " in names or "_base " in names else "chat"


class Engine:
    """A loaded DeepSeek-VL model. Use ``engine.load()`` to make one.

    One generation runs at a time; ``stream`` calls made while another runs
    wait for it.
    """

    def __init__(self, model: DeepSeekVLModel, prompt: PromptFormat, preprocess: ImagePreprocessor,
                 info: EngineInfo, context_length: int):
        self.model = model
        self.prompt_format = prompt
        self.preprocess = preprocess
        self.info = info
        self.context_length = context_length
        self._lock = threading.Lock()

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
        for dropped, start in enumerate(turn_starts):
            kept = messages[start:]
            pieces = fmt.pieces(kept, system)
            ids = fmt.encode(pieces)
            if len(ids) + reserve <= self.context_length:
                break
        if len(ids) >= self.context_length:
            raise ContextOverflowError(
                f"the message needs {len(ids)} tokens but the context window is {self.context_length}; "
                "shorten it, attach fewer images, or raise the context length"
            )
        images = [img for m in kept for img in m.images]
        pil_images = [load_image(src) for src in images]
        pixels = [self.preprocess(img) for img in pil_images]
        assert sum(isinstance(p, ImageSlot) for p in pieces) == len(pixels)
        return Prepared(
            input_ids=torch.tensor(ids, dtype=torch.long),
            images=pixels,
            image_keys=[image_key(img) for img in pil_images],
            prompt=fmt.render(pieces),
            dropped_turns=dropped,
        )

    def _embeddings(self, prepared: Prepared) -> torch.Tensor:
        # Text-only prompts never run the vision tower (upstream encodes a blank image).
        image_embeds = None
        if prepared.images:
            image_embeds = self.model.encode_images(torch.stack(prepared.images))
        return self.model.embed(prepared.input_ids, image_embeds, self.prompt_format.image_id)

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
    ) -> TextStream:
        """Start generating the answer to ``messages``; iterate the result for text chunks.

        Input problems (a bad image, a turn too long for the context) raise
        here, before any compute; failures during generation end the
        iteration with ``GenerationError``. ``stats`` is final when the
        iteration ends.
        """
        settings = settings or GenerationSettings()
        started = time.perf_counter()
        prepared = self.prepare(messages, system=system, reserve=settings.max_new_tokens)
        fmt = self.prompt_format
        prompt_tokens = len(prepared.input_ids)

        def run(stream: TextStream) -> None:
            stream.stats.dropped_turns = prepared.dropped_turns
            stream.stats.prompt_tokens = prompt_tokens
            job = DecodeJob(
                embeds=self._embeddings(prepared),
                prompt_tokens=prompt_tokens,
                max_new_tokens=min(settings.max_new_tokens, self.context_length - prompt_tokens),
                eos_ids=(fmt.eos_id,),
                stop_strings=fmt.stop_strings,
                decode=fmt.decode,
                settings=settings,
            )
            run_decode(self.model, job, stream, started)

        return TextStream(run, cancel, self._lock)


def load(
    model: str,
    *,
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
    revision: str | None = None,
    progress: ProgressCallback | None = None,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    variant: str | None = None,
) -> Engine:
    """Load a DeepSeek-VL checkpoint (hub id or local folder) and return an ``Engine``."""
    if context_length < 16:
        raise ValueError(f"context_length must be at least 16 tokens, not {context_length}")
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
    net = build_model(spec, folder, device=chosen_device, dtype=chosen_dtype, progress=progress)
    info = EngineInfo(
        model_id=str(model), variant=variant, tower=spec.vision.kind, device=str(chosen_device),
        dtype=str(chosen_dtype).replace("torch.", ""), parameters=net.parameter_count(),
        context_length=context_length, path=str(folder), load_seconds=time.perf_counter() - started,
    )
    if progress is not None:
        progress(LoadProgress("ready", 1, 1, f"{info.model_id} ready on {info.device} ({info.dtype})"))
    return Engine(net, prompt, preprocess, info, context_length)
