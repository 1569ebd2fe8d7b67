"""The assembled DeepSeek-VL model: vision tower, aligner, Llama language model.

The language model is transformers' ``LlamaForCausalLM`` as is. The model is
built on the ``meta`` device and its weights are assigned from the
checkpoint (see ``checkpoint.load_weights``).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from .checkpoint import ProgressCallback, WeightSource, check_config_against_weights, load_weights
from .errors import CheckpointError
from .spec import ModelSpec
from .vision import build_aligner, build_vision

# transformers 5 renamed ``past_key_values`` to ``cache`` in forward().
_CACHE_KWARG = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"
# transformers 4 writes a static cache at ``cache_position``; 5 dropped the argument (the cache counts itself).
_TAKES_CACHE_POSITION = "cache_position" in inspect.signature(LlamaForCausalLM.forward).parameters


_ROWS = threading.local()  # ``rows_batched``'s flag, per thread: only the scheduler's steps set it


@contextlib.contextmanager
def rows_batched() -> Iterator[None]:
    """Within it, this thread's CPU float32 linear layers of several rows run on oneDNN (``FewRowsLinear``)."""
    was = getattr(_ROWS, "on", False)
    _ROWS.on = True
    try:
        yield
    finally:
        _ROWS.on = was


class FewRowsLinear(nn.Linear):
    """An ``nn.Linear`` (same weights, same module) whose batched decode step runs on oneDNN.

    Measured on the CPU (AMD EPYC, 2 shared cores, PyTorch's MKL): a float32
    ``F.linear`` of 2-16 rows takes 3-10 times as long as one row (MKL's
    small-M GEMM; worst with 2 threads on a loaded machine: 1 thread gave
    3.6x), so 8 streams decoded together gained only 1.2-1.3x over one. oneDNN's
    linear on the same dense weights costs 1.3-2.5x one row for 2-16 rows.
    (oneDNN is faster from 2 rows to at least 256.) Only inside ``rows_batched``
    (the batch's decode step, ``decode.decode_step``, and its newcomers'
    prefill, ``batch.Scheduler``) and for more than one row: one stream
    alone (``max_batch`` 1) and every other forward keep MKL's results bit
    for bit; the batch keeps to its δ bound (tests/engine/test_batch.py).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The weights' device and dtype are checked again here: a module moved after loading takes nn.Linear's way.
        if getattr(_ROWS, "on", False) and x.numel() > x.shape[-1] and self.weight.device.type == "cpu" \
                and self.weight.dtype == x.dtype == torch.float32:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return super().forward(x)


def use_few_rows_linear(model: nn.Module) -> int:
    """Make the float32 CPU ``nn.Linear``s of ``model`` ``FewRowsLinear``s (in place, no copy); returns how many."""
    # The op is the one torch.compile's inductor uses for CPU linears; private, so a torch without it (renamed,
    # or built without oneDNN) keeps nn.Linear's way everywhere.
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return 0
    count = 0
    for module in model.modules():
        if type(module) is nn.Linear and module.weight.device.type == "cpu" \
                and module.weight.dtype == torch.float32:
            module.__class__ = FewRowsLinear
            count += 1
    return count


def llama_config(language: dict, dtype: torch.dtype) -> LlamaConfig:
    params = {k: v for k, v in language.items() if k not in ("torch_dtype", "dtype", "model_type", "architectures")}
    # Upstream's pinned transformers defaulted to an untied lm_head; say so in
    # case a future default changes.
    params.setdefault("tie_word_embeddings", False)
    config = LlamaConfig(**params)
    config._attn_implementation = "sdpa"
    config.dtype = dtype
    return config


class DeepSeekVLModel(nn.Module):
    """Upstream's ``MultiModalityCausalLM``, with the same attribute names."""

    def __init__(self, spec: ModelSpec, dtype: torch.dtype):
        super().__init__()
        self.spec = spec
        self.vision_model = build_vision(spec.vision)
        self.aligner = build_aligner(spec.aligner)
        self.language_model = LlamaForCausalLM(llama_config(spec.language, dtype))

    # The input embeddings keep the load dtype under ``quantize`` (the output head may not).
    @property
    def device(self) -> torch.device:
        return self.language_model.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.model.embed_tokens.weight.dtype

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] pixel values in the preprocessor's range -> [N, T_img, D] embeddings."""
        pixels = pixels.to(device=self.device, dtype=self.dtype)
        return self.aligner(self.vision_model(pixels))

    @torch.inference_mode()
    def embed(self, input_ids: torch.Tensor, image_embeds: torch.Tensor | None, image_token_id: int) -> torch.Tensor:
        """[T] ids -> [1, T, D] input embeddings with image slots filled in prompt order."""
        ids = input_ids.to(self.device)
        embeds = self.language_model.get_input_embeddings()(ids)
        if image_embeds is not None and image_embeds.numel():
            mask = ids == image_token_id
            embeds[mask] = image_embeds.reshape(-1, embeds.shape[-1]).to(embeds.dtype)
        return embeds.unsqueeze(0)

    def forward_embeds(self, embeds: torch.Tensor, cache=None, logits_to_keep: int = 0,
                       positions: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        """Run the language model on [B, T, D] embeddings; returns (logits [B, T', V], cache).

        ``positions`` ([B, T] absolute positions) is for a static or batch
        cache, whose length is not its size; a growing cache counts positions
        itself. ``mask`` is a prepared 4-D attention mask (the batch's
        padding, see ``caches.kv.BatchCache``), which transformers uses as is.
        """
        kwargs = {_CACHE_KWARG: cache, "use_cache": cache is not None, "logits_to_keep": logits_to_keep}
        if mask is not None:
            kwargs["attention_mask"] = mask
        if positions is not None:
            kwargs["position_ids"] = positions
            if _TAKES_CACHE_POSITION:
                kwargs["cache_position"] = positions[0]
        out = self.language_model(inputs_embeds=embeds, **kwargs)
        return out.logits, cache

    def parameter_count(self) -> int:
        from .quantize import quantized_parameter_count

        return sum(p.numel() for p in self.parameters()) + quantized_parameter_count(self)


def build_model(
    spec: ModelSpec,
    folder: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    progress: ProgressCallback | None = None,
    after_assign: Callable[[nn.Module, str], None] | None = None,
) -> DeepSeekVLModel:
    # The weight headers first: a config that disagrees with them (or asks for
    # far more layers than they hold) is refused before any module is built.
    source = WeightSource(folder)
    on_file = source.shapes()
    try:
        language = llama_config(spec.language, dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"{folder / 'config.json'}: language_config is not valid "
                              f"({' '.join(str(exc).split())[:160]}); re-download the model") from None
    check_config_against_weights(spec, language, on_file, folder)
    with torch.device("meta"):
        model = DeepSeekVLModel(spec, dtype)
    load_weights(model, folder, device=device, dtype=dtype, progress=progress, source=source, on_file=on_file,
                 after_assign=after_assign)
    _materialise_derived_buffers(model, device)
    use_few_rows_linear(model.language_model)  # what int8/int4 left as nn.Linear (all of it, unquantized)
    return model.eval()


def _materialise_derived_buffers(model: DeepSeekVLModel, device: torch.device) -> None:
    """Recreate non-persistent buffers (rotary frequencies) that stayed on meta."""
    lm = model.language_model
    rotary = lm.model.rotary_emb
    with torch.device(device):
        lm.model.rotary_emb = type(rotary)(config=lm.config)
    left = ([name for name, t in model.named_buffers() if t.is_meta]
            + [name for name, t in model.named_parameters() if t.is_meta])
    if left:
        raise RuntimeError(f"internal error: tensors left unloaded: {left[:5]}")
