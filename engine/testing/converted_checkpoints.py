"""Write DeepSeek-VL checkpoint folders in transformers' converted layout, with random weights.

The folders are written by transformers' own classes
(``DeepseekVL[Hybrid]ForConditionalGeneration(config).save_pretrained`` and
the processor's ``save_pretrained``), as a deepseek-community/* repository
is, with the same locally built tokenizer as ``random_checkpoints.write_checkpoint``
and the repositories' chat template. ``size="tiny"`` matches the sizes of
``random_checkpoints.write_checkpoint``'s tiny checkpoints; ``size="full"`` is the
1.3B chat model's config (benchmarks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .random_checkpoints import BOS, CLIP_MEAN, CLIP_STD, EOS, HALF, IMAGE_TAG, random_init, write_tokenizer

# deepseek-community's chat template, as transformers' DeepseekVLProcessor tests carry it.
CHAT_TEMPLATE = (
    "{% set seps = ['\n\n', '" + EOS + "'] %}{% set i = 0 %}You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, and assist the user with a variety of "
    "tasks using natural language.\n\n{% for message in messages %}{% if message['role']|lower == 'user' %}User: "
    "{% elif message['role']|lower == 'assistant' %}Assistant:{% if not (loop.last and not add_generation_prompt and "
    "message['content'][0]['type']=='text' and message['content'][0]['text']=='') %} {% endif %}{% else %}"
    "{{ message['role'].capitalize() }}: {% endif %}{% for content in message['content'] %}{% if content['type'] == "
    "'image' %}" + IMAGE_TAG + "{% elif content['type'] == 'text' %}{% set text = content['text'] %}{% if loop.first %}"
    "{% set text = text.lstrip() %}{% endif %}{% if loop.last %}{% set text = text.rstrip() %}{% endif %}{% if not "
    "loop.first and message['content'][loop.index0-1]['type'] == 'text' %}{{ ' ' + text }}{% else %}{{ text }}"
    "{% endif %}{% endif %}{% endfor %}{% if not loop.last or add_generation_prompt %}{% if message['role']|lower == "
    "'user' %}{{ seps[0] }}{% else %}{{ seps[1] }}{% endif %}{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "Assistant:{% endif %}"
)


def converted_config(tower: str = "siglip", size: str = "tiny", *, hidden_act: str | None = None,
                     lm_layers: int | None = None, tie: bool = False):
    """transformers' config object for a converted checkpoint (tied head off, as DeepSeek-VL's own, unless ``tie``)."""
    from transformers import DeepseekVLConfig, DeepseekVLHybridConfig

    full = size == "full"
    text: dict[str, Any] = (
        {"hidden_size": 2048 if tower == "siglip" else 4096, "intermediate_size": 5632 if tower == "siglip" else 11008,
         "num_attention_heads": 16 if tower == "siglip" else 32, "num_key_value_heads": 16 if tower == "siglip" else 32,
         "num_hidden_layers": 24 if tower == "siglip" else 30, "vocab_size": 102400, "max_position_embeddings": 16384}
        if full else
        {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 4,
         "num_hidden_layers": 2, "vocab_size": 1024, "max_position_embeddings": 16384}
    )
    text.update(model_type="llama", rms_norm_eps=1e-6, tie_word_embeddings=tie)
    if lm_layers is not None:
        text["num_hidden_layers"] = lm_layers
    siglip: dict[str, Any] = (
        {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
         "image_size": 384, "patch_size": 16}
        if full else
        {"hidden_size": 32 if tower == "siglip" else 64, "intermediate_size": 128 if tower == "siglip" else 256,
         "num_hidden_layers": 2, "num_attention_heads": 2 if tower == "siglip" else 4, "image_size": 32,
         "patch_size": 8}
    )
    siglip.update(model_type="siglip_vision_model", layer_norm_eps=1e-6)
    if hidden_act is not None:
        siglip["hidden_act"] = hidden_act
    if tower == "siglip":
        return DeepseekVLConfig(text_config=text, vision_config=siglip, image_token_id=100015 if full else 915,
                                tie_word_embeddings=tie)
    sam: dict[str, Any] = (
        {"hidden_size": 768, "output_channels": 256, "num_hidden_layers": 12, "num_attention_heads": 12,
         "image_size": 1024, "patch_size": 16, "window_size": 14, "global_attn_indexes": [2, 5, 8, 11], "mlp_dim": 3072}
        if full else
        {"hidden_size": 32, "output_channels": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 64,
         "patch_size": 8, "window_size": 4, "global_attn_indexes": [1], "mlp_dim": 128}
    )
    sam.update(model_type="sam_vision_model")
    return DeepseekVLHybridConfig(text_config=text, vision_config=siglip, high_res_vision_config=sam,
                                  image_token_id=100015 if full else 915, tie_word_embeddings=tie)


def write_processor(folder: Path, tower: str, size: str = "tiny") -> int:
    """The tokenizer (built locally), image processor and chat template, saved by transformers' processor.

    Returns how many vocabulary entries are real BPE tokens (``random_checkpoints.write_tokenizer``).
    """
    from transformers import (
        DeepseekVLHybridImageProcessor,
        DeepseekVLHybridProcessor,
        DeepseekVLImageProcessor,
        DeepseekVLProcessor,
        PreTrainedTokenizerFast,
    )

    full = size == "full"
    trained = write_tokenizer(folder, base_vocab=100000 if full else 900)["<trained>"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), bos_token=BOS, eos_token=EOS, pad_token=EOS,
        extra_special_tokens={"image_token": IMAGE_TAG},
    )
    low = 384 if full else 32
    if tower == "siglip":
        processor: Any = DeepseekVLProcessor(
            image_processor=DeepseekVLImageProcessor(size={"height": low, "width": low}, image_mean=HALF,
                                                     image_std=HALF),
            tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, num_image_tokens=576 if full else 16,
        )
    else:
        high = 1024 if full else 64
        processor = DeepseekVLHybridProcessor(
            image_processor=DeepseekVLHybridImageProcessor(
                size={"height": low, "width": low}, high_res_size={"height": high, "width": high},
                image_mean=HALF, image_std=HALF, high_res_image_mean=CLIP_MEAN, high_res_image_std=CLIP_STD,
            ),
            tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, num_image_tokens=576 if full else 16,
        )
    processor.save_pretrained(str(folder))
    # transformers 5 writes no special_tokens_map.json; drop the one write_tokenizer left, as a real repository lacks
    # it.
    (folder / "special_tokens_map.json").unlink(missing_ok=True)
    return trained


def write_converted_checkpoint(
    folder: str | Path, *, tower: str = "siglip", size: str = "tiny", seed: int = 0, hidden_act: str | None = None,
    lm_layers: int | None = None, tie: bool = False,
) -> Path:
    """A complete converted-layout folder with random weights (the same recipe as
    ``random_checkpoints.write_checkpoint``)."""
    from transformers import DeepseekVLForConditionalGeneration, DeepseekVLHybridForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = converted_config(tower, size, hidden_act=hidden_act, lm_layers=lm_layers, tie=tie)
    model_class = DeepseekVLForConditionalGeneration if tower == "siglip" else DeepseekVLHybridForConditionalGeneration
    model = model_class(config)
    gen = torch.Generator().manual_seed(seed)
    trained = write_processor(folder, tower, size)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            mean, std = random_init("hd_alpha_downsamples" if name.endswith("high_res_vision_alpha") else name,
                                    tuple(param.shape))
            param.copy_(torch.full(param.shape, mean) if std == 0.0
                        else mean + std * torch.randn(param.shape, generator=gen))
        # As in random_checkpoints.write_checkpoint: answers stay on real tokens.
        if not tie:  # a tied head is the embedding matrix, which the prompt's tokens need whole
            model.lm_head.weight[trained:] = 0
    model.save_pretrained(str(folder))
    return folder

