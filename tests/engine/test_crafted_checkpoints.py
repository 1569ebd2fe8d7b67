"""Crafted checkpoints: a config or header that would exhaust memory or time is refused first.

Each case damages a copy of a real tiny checkpoint and goes through the real
``engine.load``. A refusal must come within a second, as one line, before
the model is built (``DeepSeekVLModel`` is watched, not replaced).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import engine
import engine.model
from engine.checkpoint import MAX_HEADER_BYTES
from engine.spec import MAX_JSON_BYTES


@pytest.fixture
def good(tiny_siglip: Path) -> Path:
    return tiny_siglip  # shared (conftest): the tests change copies only


@pytest.fixture
def hybrid(tiny_hybrid: Path) -> Path:
    return tiny_hybrid


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the model was built (on meta) during the test."""
    made: list[int] = []
    real_init = engine.model.DeepSeekVLModel.__init__

    def counting(self, *args, **kwargs):
        made.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(engine.model.DeepSeekVLModel, "__init__", counting)
    return made


def crafted(source: Path, dest: Path, change: Callable[[dict], None], name: str = "config.json") -> Path:
    folder = Path(shutil.copytree(source, dest))
    data = json.loads((folder / name).read_text())
    change(data)
    (folder / name).write_text(json.dumps(data))
    return folder


def refused(folder: Path, *fragments: str, within: float = 1.0) -> str:
    started = time.monotonic()
    with pytest.raises(engine.CheckpointError) as caught:
        engine.load(str(folder), device="cpu")
    took = time.monotonic() - started
    message = str(caught.value)
    assert took < within, f"refused only after {took:.1f} s"
    assert "\n" not in message and all(f in message for f in fragments), message
    return message


def _language(**values) -> Callable[[dict], None]:
    return lambda config: config["language_config"].update(values)


@pytest.mark.parametrize(("key", "value", "shown"), [
    ("num_hidden_layers", 200_000, "num_hidden_layers is 200,000, outside 1..256"),
    ("hidden_size", 10**6, "hidden_size is 1,000,000, outside 1..32,768"),
    ("vocab_size", 10**9, "vocab_size is 1,000,000,000, outside 1..1,048,576"),
    ("num_hidden_layers", "many", "num_hidden_layers is 'many'"),
])
def test_sizes_beyond_any_real_model_are_refused_at_once(tmp_path, good, builds, key, value, shown) -> None:
    folder = crafted(good, tmp_path / "bad", _language(**{key: value}))
    refused(folder, "config.json", shown)
    assert builds == []


def test_a_huge_vision_tower_is_refused_at_once(tmp_path, good, builds) -> None:
    folder = crafted(good, tmp_path / "bad", lambda c: c["vision_config"]["params"].update(layers=100_000))
    refused(folder, "vision tower layers is 100,000, outside 1..256")
    assert builds == []


def test_a_huge_preprocessor_image_size_is_refused(tmp_path, good) -> None:
    folder = crafted(good, tmp_path / "bad", lambda c: c.update(image_size=10**6), name="preprocessor_config.json")
    refused(folder, "preprocessor_config.json", "image_size 1000000")


@pytest.mark.parametrize(("change", "fragments"), [
    (_language(num_hidden_layers=40), ("configures 40 language layers but the weights hold 2",)),
    (_language(num_hidden_layers=1), ("configures 1 language layers but the weights hold 2",)),
    (_language(hidden_size=128), ("embed_tokens.weight has shape [1024, 64], the config implies [1024, 128]",)),
    (_language(intermediate_size=4096), ("gate_proj.weight has shape [128, 64], the config implies [4096, 64]",)),
    (lambda c: c["vision_config"]["params"].update(layers=9),
     ("configures 9 vision tower layers but the weights hold 2",)),
    (lambda c: c["vision_config"]["params"].update(width=48), ("patch_embed.proj.weight has shape [32, 3, 8, 8]",)),
])
def test_a_config_that_disagrees_with_the_headers_is_refused_before_building(tmp_path, good, builds, change,
                                                                              fragments) -> None:
    folder = crafted(good, tmp_path / "bad", change)
    refused(folder, *fragments, "is config.json from the same model?")
    assert builds == []


def test_hybrid_towers_are_counted_against_the_headers(tmp_path, hybrid, builds) -> None:
    folder = crafted(hybrid, tmp_path / "bad",
                     lambda c: c["vision_config"]["params"]["high_res_cfg"].update(layers=7, global_attn_indexes=[1]))
    refused(folder, "configures 7 high-resolution vision tower layers but the weights hold 2")
    assert builds == []
    engine.load(str(hybrid), device="cpu")  # and the real one still loads
    assert builds == [1]


def _padded_header(source: Path, dest: Path, padding: int) -> None:
    """Rewrite a safetensors file with ``padding`` spaces after its JSON header (valid per the format)."""
    raw = source.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = raw[8:8 + size] + b" " * padding
    dest.write_bytes(len(header).to_bytes(8, "little") + header + raw[8 + size:])


def test_a_safetensors_header_over_the_limit_is_refused(tmp_path, good, builds) -> None:
    folder = Path(shutil.copytree(good, tmp_path / "bad"))
    _padded_header(good / "model.safetensors", folder / "model.safetensors", MAX_HEADER_BYTES)
    refused(folder, "model.safetensors is not a valid safetensors file", f"at most {MAX_HEADER_BYTES} bytes")
    assert builds == []
    small = Path(shutil.copytree(good, tmp_path / "padded"))
    _padded_header(good / "model.safetensors", small / "model.safetensors", 1000)
    assert engine.load(str(small), device="cpu").info.parameters > 0  # padding within the limit is fine


def test_a_header_claiming_more_than_the_file_is_refused(tmp_path, good) -> None:
    folder = Path(shutil.copytree(good, tmp_path / "bad"))
    raw = (good / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes((len(raw) * 4).to_bytes(8, "little") + raw[8:])
    refused(folder, "bad header size")


def _sharded(source: Path, dest: Path, weight_map_file: str = "model.safetensors", padding: int = 0) -> Path:
    folder = Path(shutil.copytree(source, dest))
    raw = (folder / "model.safetensors").read_bytes()
    names = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    index = {"metadata": {}, "weight_map": {name: weight_map_file for name in names if name != "__metadata__"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index) + " " * padding)
    return folder


def test_a_weight_index_over_the_limit_or_pointing_outside_is_refused(tmp_path, good, builds) -> None:
    assert engine.load(str(_sharded(good, tmp_path / "ok")), device="cpu").info.parameters > 0
    refused(_sharded(good, tmp_path / "big", padding=MAX_JSON_BYTES), "model.safetensors.index.json",
            "is larger than 16 MiB")
    outside = _sharded(good, tmp_path / "outside", weight_map_file="../ok/model.safetensors")
    refused(outside, "names a weight file outside")
    assert builds == [1]  # only the good one was built
