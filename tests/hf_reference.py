"""An independent implementation to check the engine against.

transformers ships its own ``deepseek_vl`` (SigLIP) and
``deepseek_vl_hybrid`` (SAM + SigLIP) models. This module renames the
original checkpoint's keys into theirs, following transformers' own
conversion scripts, and builds the matching configs from our config.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

_SIGLIP = [
    (r"pos_embed$", "embeddings.position_embedding.weight"),
    (r"patch_embed\.proj\.(weight|bias)$", r"embeddings.patch_embedding.\1"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)$", r"encoder.layers.\1.self_attn.out_proj.\2"),
    (r"blocks\.(\d+)\.norm(\d)\.(weight|bias)$", r"encoder.layers.\1.layer_norm\2.\3"),
    (r"blocks\.(\d+)\.mlp\.fc(\d)\.(weight|bias)$", r"encoder.layers.\1.mlp.fc\2.\3"),
    (r"^norm\.(weight|bias)$", r"post_layernorm.\1"),
]
_SAM = [
    (r"pos_embed$", "pos_embed"),
    (r"patch_embed\.proj\.(weight|bias)$", r"patch_embed.projection.\1"),
    (r"blocks\.(\d+)\.norm(\d)\.(weight|bias)$", r"layers.\1.layer_norm\2.\3"),
    (r"blocks\.(\d+)\.attn\.(rel_pos_h|rel_pos_w)$", r"layers.\1.attn.\2"),
    (r"blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)$", r"layers.\1.attn.\2.\3"),
    (r"blocks\.(\d+)\.mlp\.lin(\d)\.(weight|bias)$", r"layers.\1.mlp.lin\2.\3"),
    (r"^neck\.0\.weight$", "neck.conv1.weight"),
    (r"^neck\.1\.(weight|bias)$", r"neck.layer_norm1.\1"),
    (r"^neck\.2\.weight$", "neck.conv2.weight"),
    (r"^neck\.3\.(weight|bias)$", r"neck.layer_norm2.\1"),
]
_NECK_HD = {"0.weight": "conv1.weight", "1.weight": "layer_norm1.weight", "1.bias": "layer_norm1.bias",
            "2.weight": "conv2.weight", "3.weight": "layer_norm2.weight", "3.bias": "layer_norm2.bias"}


def _rename(rules, key: str) -> str | None:
    for pattern, repl in rules:
        if re.search(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def _siglip_into(out: dict, prefix: str, key: str, value: torch.Tensor) -> None:
    if ".attn_pool." in "." + key or key.startswith("attn_pool."):
        return
    qkv = re.match(r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", key)
    if qkv:
        for name, part in zip("qkv", value.chunk(3, dim=0), strict=True):
            out[f"{prefix}encoder.layers.{qkv.group(1)}.self_attn.{name}_proj.{qkv.group(2)}"] = part
        return
    new = _rename(_SIGLIP, key)
    assert new is not None, key
    out[prefix + new] = value.squeeze(0) if key == "pos_embed" else value


def convert_state_dict(original: dict[str, torch.Tensor], hybrid: bool) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in original.items():
        if key.startswith("language_model.model."):
            out["model.language_model." + key[len("language_model.model."):]] = value
        elif key == "language_model.lm_head.weight":
            out["lm_head.weight"] = value
        elif not hybrid and key.startswith("vision_model.vision_tower."):
            _siglip_into(out, "model.vision_model.vision_model.", key[len("vision_model.vision_tower."):], value)
        elif not hybrid and key.startswith("aligner.layers."):
            index, leaf = key[len("aligner.layers."):].split(".")
            out[f"model.aligner.linear{1 if index == '0' else 2}.{leaf}"] = value
        elif hybrid and key.startswith("vision_model.vision_tower_low.vision_tower."):
            _siglip_into(out, "model.vision_model.vision_model.",
                         key[len("vision_model.vision_tower_low.vision_tower."):], value)
        elif hybrid and key.startswith("vision_model.vision_tower_high.vision_tower."):
            sub = key[len("vision_model.vision_tower_high.vision_tower."):]
            if sub.startswith("neck_hd."):
                out["model.high_res_vision_neck." + _NECK_HD[sub[len("neck_hd."):]]] = value
            elif sub.startswith("downsamples."):
                out[f"model.high_res_vision_proj.conv{int(sub.split('.')[1]) + 1}.weight"] = value
            elif sub == "hd_alpha_downsamples":
                out["model.high_res_vision_alpha"] = value
            else:
                new = _rename(_SAM, sub)
                assert new is not None, key
                out["model.high_res_vision_model." + new] = value
        elif hybrid and key.startswith("aligner."):
            leaf = key[len("aligner."):]
            mapping = {"layers.1": "proj", "low_up_proj": "vision_proj", "high_up_proj": "high_res_vision_proj"}
            head, _, tail = leaf.rpartition(".")
            out[f"model.aligner.{mapping[head]}.{tail}"] = value
        elif re.match(r"vision_model\.(high|low)_layer_norm\.", key):
            continue  # built by upstream, never run
        else:
            raise AssertionError(f"unmapped key {key}")
    return out


def _siglip_config(params: dict, presets: dict) -> dict:
    hp = dict(presets[params["model_name"]])
    hp.update({k: params[k] for k in hp if k in params})
    return {
        "hidden_size": hp["width"], "intermediate_size": int(hp["width"] * hp["mlp_ratio"]),
        "num_hidden_layers": hp["layers"], "num_attention_heads": hp["heads"], "image_size": hp["image_size"],
        "patch_size": hp["patch_size"], "hidden_act": "gelu", "layer_norm_eps": 1e-6, "vision_use_head": False,
    }


# Inner prefixes differ between transformers releases.
_PREFIX_VARIANTS = [
    ("vision_model.vision_model.", "vision_model."),
    ("high_res_vision_model.", "high_res_vision_model.vision_encoder."),
]


def matched_keys(converted: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    return {_matching_key(k, expected): v for k, v in converted.items()}


def _matching_key(key: str, expected: set[str]) -> str:
    if key in expected:
        return key
    for old, new in _PREFIX_VARIANTS:
        if key.replace(old, new, 1) in expected:
            return key.replace(old, new, 1)
    return key


def build_reference(folder: Path, image_token_id: int):
    """The transformers model matching ``folder``'s config.json, weights untouched: (model, hybrid)."""
    from transformers import (
        DeepseekVLConfig,
        DeepseekVLForConditionalGeneration,
        DeepseekVLHybridConfig,
        DeepseekVLHybridForConditionalGeneration,
    )

    from engine.spec import SAM_PRESETS, SIGLIP_PRESETS

    config = json.loads((folder / "config.json").read_text())
    vision = config["vision_config"]
    hybrid = vision["cls"] == "HybridVisionTower"
    text = {k: v for k, v in config["language_config"].items() if k not in ("torch_dtype", "model_type")}
    text["tie_word_embeddings"] = False
    if hybrid:
        high = vision["params"]["high_res_cfg"]
        hp = dict(SAM_PRESETS[high["model_name"]])
        hp.update({k: high[k] for k in hp if k in high})
        assert list(hp["downsample_channels"]) == [hp["out_chans"] * 2, hp["out_chans"] * 4]
        hf_config = DeepseekVLHybridConfig(
            text_config=text,
            vision_config=_siglip_config(vision["params"]["low_res_cfg"], SIGLIP_PRESETS),
            high_res_vision_config={
                "hidden_size": hp["width"], "output_channels": hp["out_chans"], "num_hidden_layers": hp["layers"],
                "num_attention_heads": hp["heads"], "image_size": hp["image_size"], "patch_size": hp["patch_size"],
                "window_size": hp["window_size"], "global_attn_indexes": list(hp["global_attn_indexes"]),
            },
            image_token_id=image_token_id, tie_word_embeddings=False,
        )
        model = DeepseekVLHybridForConditionalGeneration(hf_config)
    else:
        hf_config = DeepseekVLConfig(
            text_config=text, vision_config=_siglip_config(vision["params"], SIGLIP_PRESETS),
            image_token_id=image_token_id, tie_word_embeddings=False,
        )
        model = DeepseekVLForConditionalGeneration(hf_config)
    return model, hybrid


def load_reference(folder: Path, image_token_id: int):
    """Build the transformers model for ``folder`` and load its converted weights (float32, eval)."""
    model, hybrid = build_reference(folder, image_token_id)
    original: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        original.update(load_file(str(path)))
    converted = matched_keys(convert_state_dict(original, hybrid), set(model.state_dict()))
    result = model.load_state_dict(converted, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    assert not [k for k in result.missing_keys if "rotary" not in k], result.missing_keys
    return model.float().eval(), hybrid


def write_converted_from_original(original: Path, folder: Path) -> Path:
    """``original``'s weights in the converted layout, renamed by transformers' conversion rules
    (``convert_state_dict``), saved by transformers' own classes with the matching processor: a deepseek-community/*
    style folder."""
    from engine.testing.converted_checkpoints import write_processor

    folder.mkdir(parents=True, exist_ok=True)
    model, hybrid = load_reference(original, image_token_id=915)
    model.save_pretrained(str(folder))
    write_processor(folder, "hybrid" if hybrid else "siglip")
    return folder
