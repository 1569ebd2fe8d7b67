"""The real tower names build upstream's exact full-size architectures.

Built on the meta device (no memory, no weights): the engine's modules for
the full 1.3B and 7B configs, renamed to transformers' keys, have exactly the
tensors, with the same shapes, as transformers' own DeepSeek-VL models built
from the same config.json.
"""

from __future__ import annotations

import json

import pytest
import torch
from hf_reference import build_reference, convert_state_dict, matched_keys

from engine.checkpoint import original_key
from engine.model import DeepSeekVLModel
from engine.spec import read_spec
from engine.testing.random_checkpoints import checkpoint_configs


def _write_configs(folder, tower: str):
    cfg = checkpoint_configs(tower, "full")
    (folder / "config.json").write_text(json.dumps(cfg["config"]))
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg["preprocessor"]))
    (folder / "processor_config.json").write_text(json.dumps(cfg["processor"]))
    for name in ("tokenizer.json", "tokenizer_config.json"):  # read_spec only checks they exist
        (folder / name).write_text("{}")
    return folder


@pytest.mark.parametrize(("tower", "hidden", "layers"), [("siglip", 2048, 24), ("hybrid", 4096, 30)])
def test_full_size_engine_matches_transformers_shapes(tmp_path, tower, hidden, layers):
    folder = _write_configs(tmp_path, tower)
    spec = read_spec(folder)
    with torch.device("meta"):
        ours = DeepSeekVLModel(spec, torch.bfloat16)
        reference, _ = build_reference(folder, 100015)
    original = {original_key(k): v for k, v in ours.state_dict().items()}
    converted = matched_keys(convert_state_dict(original, tower == "hybrid"), set(reference.state_dict()))
    want = {k: tuple(v.shape) for k, v in reference.state_dict().items() if "rotary" not in k}
    got = {k: tuple(v.shape) for k, v in converted.items()}
    assert got == want
    # Upstream's published sizes.
    assert spec.vision.low.width == 1024 and spec.vision.low.layers == 24 and spec.vision.num_tokens == 576
    assert ours.language_model.config.hidden_size == hidden and ours.language_model.config.num_hidden_layers == layers
    if tower == "hybrid":
        assert (spec.vision.high.width, spec.vision.high.layers, spec.vision.high.image_size) == (768, 12, 1024)
        assert spec.vision.high.global_attn_indexes == (2, 5, 8, 11) and spec.vision.high.out_dim == 1024
