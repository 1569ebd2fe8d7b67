"""The assembled DeepSeek-VL model: vision tower, aligner, Llama language model.

The language model is transformers' ``LlamaForCausalLM`` as is. The model is
built on the ``meta`` device and its weights are assigned from the
checkpoint (see ``checkpoint.load_weights``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
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
