"""Read a DeepSeek-VL checkpoint's JSON files into architecture specs.

The original layout describes each part by an upstream class name (``cls``)
and its constructor ``params``. Named towers get their exact upstream
hyper-parameters from the preset tables below; extra keys in ``params``
(``width``, ``layers``...) override them, which is how tiny test checkpoints
are described.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .files import UnusableFileError, read_regular

# Upstream's siglip_vit.py / sam.py presets.
SIGLIP_PRESETS: dict[str, dict[str, Any]] = {
    "siglip_large_patch16_384": dict(image_size=384, patch_size=16, width=1024, layers=24, heads=16, mlp_ratio=4.0),
    "siglip_so400m_patch14_384": dict(image_size=336, patch_size=14, width=1152, layers=27, heads=16, mlp_ratio=3.7362),
    "siglip_so400m_patch14_224": dict(image_size=224, patch_size=14, width=1152, layers=27, heads=16, mlp_ratio=3.7362),
}
SAM_PRESETS: dict[str, dict[str, Any]] = {
    "sam_b_downsample": dict(
        image_size=1024, patch_size=16, width=768, layers=12, heads=12, window_size=14,
        global_attn_indexes=(2, 5, 8, 11), out_chans=256, downsample_channels=(512, 1024), resample_size=96,
    ),
}
PROJECTOR_TYPES = ("identity", "linear", "mlp_gelu", "low_high_hybrid_split_mlp_gelu")
REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json")
# The converted layout keeps its image processor in preprocessor_config.json or processor_config.json
# (engine.converted).
CONVERTED_REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
# The most read from a checkpoint's JSON files (upstream's are a few kB; the
# tokenizer a few MB), so a crafted file cannot exhaust memory being read.
MAX_JSON_BYTES = 16 << 20
MAX_TOKENIZER_BYTES = 64 << 20


@dataclass(frozen=True)
class SiglipSpec:
    model_name: str
    image_size: int
    patch_size: int
    width: int
    layers: int  # blocks actually built, after select_layer
    heads: int
    mlp_ratio: float
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class SamSpec:
    model_name: str
    image_size: int
    patch_size: int
    width: int
    layers: int
    heads: int
    window_size: int
    global_attn_indexes: tuple[int, ...]
    out_chans: int
    downsample_channels: tuple[int, ...]
    resample_size: int
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None

    @property
    def num_tokens(self) -> int:
        return (self.resample_size // 2 ** len(self.downsample_channels)) ** 2

    @property
    def out_dim(self) -> int:
        return self.downsample_channels[-1] if self.downsample_channels else self.out_chans


@dataclass(frozen=True)
class VisionSpec:
    kind: str  # "siglip" or "hybrid"
    low: SiglipSpec
    high: SamSpec | None = None

    @property
    def image_size(self) -> int:
        return self.high.image_size if self.high else self.low.image_size

    @property
    def num_tokens(self) -> int:
        return self.low.num_tokens


@dataclass(frozen=True)
class AlignerSpec:
    projector_type: str
    input_dim: int
    n_embed: int
    depth: int = 1


@dataclass(frozen=True)
class ModelSpec:
    vision: VisionSpec
    aligner: AlignerSpec
    language: dict[str, Any]
    image_tag: str = "<image_placeholder>"
    num_image_tokens: int = 576
    sft_format: str = "deepseek"
    preprocessor: dict[str, Any] = field(default_factory=dict)
    tokenizer_config: dict[str, Any] = field(default_factory=dict)
    special_tokens_map: dict[str, Any] = field(default_factory=dict)
    layout: str = "original"  # or "converted": transformers' deepseek_vl / deepseek_vl_hybrid (engine.converted)


def read_json(path: Path, *, required: bool = True, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise CheckpointError(f"{path.parent} is missing {path.name}; "
                                  "re-download the model or point --model at a complete DeepSeek-VL folder")
        return {}
    try:
        # Only a regular file of at most ``limit`` bytes: a FIFO here once hung the loader.
        data = json.loads(read_regular(path, limit).decode("utf-8"))
    except UnusableFileError as exc:
        raise CheckpointError(f"{_one_line(exc)}; re-download the model") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({_one_line(exc)}); re-download the model") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} should hold a JSON object; re-download the model")
    return data


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _overridden(preset: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    merged = dict(preset)
    merged.update({k: params[k] for k in preset if k in params})
    return merged


def _siglip_spec(params: dict[str, Any], where: str) -> SiglipSpec:
    name = params.get("model_name", "")
    if name not in SIGLIP_PRESETS:
        raise CheckpointError(
            f"unknown vision tower {name!r} in {where}; supported: {', '.join(SIGLIP_PRESETS)} "
            "(is this a DeepSeek-VL checkpoint?)"
        )
    hp = _overridden(SIGLIP_PRESETS[name], params)
    select_layer = int(params.get("select_layer", -1))
    # Upstream builds only the blocks up to select_layer (negative counts from the end).
    layers = (min(hp["layers"], hp["layers"] + select_layer + 1) if select_layer <= 0
              else min(hp["layers"], select_layer))
    return SiglipSpec(
        model_name=name, image_size=int(hp["image_size"]), patch_size=int(hp["patch_size"]), width=int(hp["width"]),
        layers=layers, heads=int(hp["heads"]), mlp_ratio=float(hp["mlp_ratio"]),
        pixel_mean=_triple(params.get("pixel_mean")), pixel_std=_triple(params.get("pixel_std")),
    )


def _sam_spec(params: dict[str, Any], where: str) -> SamSpec:
    name = params.get("model_name", "")
    if name not in SAM_PRESETS:
        raise CheckpointError(f"unknown high-resolution vision tower {name!r} in {where}; "
                              f"supported: {', '.join(SAM_PRESETS)}")
    hp = _overridden(SAM_PRESETS[name], params)
    return SamSpec(
        model_name=name, image_size=int(hp["image_size"]), patch_size=int(hp["patch_size"]), width=int(hp["width"]),
        layers=int(hp["layers"]), heads=int(hp["heads"]), window_size=int(hp["window_size"]),
        global_attn_indexes=tuple(int(i) for i in hp["global_attn_indexes"]), out_chans=int(hp["out_chans"]),
        downsample_channels=tuple(int(c) for c in hp["downsample_channels"]), resample_size=int(hp["resample_size"]),
        pixel_mean=_triple(params.get("pixel_mean")), pixel_std=_triple(params.get("pixel_std")),
    )


def _triple(value) -> tuple[float, ...] | None:
    return None if value is None else tuple(float(v) for v in value)


def _part(config: dict[str, Any], key: str, folder: Path) -> tuple[str, dict[str, Any]]:
    part = config.get(key)
    if not isinstance(part, dict) or not isinstance(part.get("params", {}), dict):
        raise CheckpointError(f"{folder / 'config.json'} has no valid {key!r} section; "
                              "this is not a DeepSeek-VL checkpoint")
    return str(part.get("cls", "")), dict(part.get("params", {}))


def read_spec(folder: Path) -> ModelSpec:
    """Parse and check the JSON files of a checkpoint folder (no weights are read)."""
    from .converted import CONVERTED_TYPES, converted_spec, is_converted

    config = read_json(folder / "config.json")
    if is_converted(config):
        for name in CONVERTED_REQUIRED_FILES:
            if not (folder / name).exists():
                raise CheckpointError(f"{folder} is missing {name}; "
                                      "re-download the model or point --model at a complete DeepSeek-VL folder")
        return _checked(converted_spec(folder, config), folder)
    if config.get("model_type") != "multi_modality":
        found = config.get("model_type", "none")
        sections = ", ".join(sorted(k for k in config if k.endswith("_config"))) or "no *_config sections"
        raise CheckpointError(
            f"{folder} is not a DeepSeek-VL checkpoint "
            f"(config.json has model_type {str(found)[:60]!r} and {sections[:120]}; "
            "expected 'multi_modality' with language_config/vision_config/aligner_config, "
            f"or {' / '.join(CONVERTED_TYPES)} with text_config/vision_config); "
            "pass a deepseek-ai/deepseek-vl-* or deepseek-community/deepseek-vl-* model"
        )
    for name in REQUIRED_FILES:
        if not (folder / name).exists():
            raise CheckpointError(f"{folder} is missing {name}; "
                                  "re-download the model or point --model at a complete DeepSeek-VL folder")

    where = folder / "config.json"
    vision_cls, vision_params = _part(config, "vision_config", folder)
    try:
        if "HybridVisionTower" in vision_cls:
            high_cfg, low_cfg = vision_params.get("high_res_cfg"), vision_params.get("low_res_cfg")
            if not isinstance(high_cfg, dict) or not isinstance(low_cfg, dict):
                raise CheckpointError(f"{where}: HybridVisionTower needs high_res_cfg and low_res_cfg; "
                                      "re-download the model")
            vision = VisionSpec("hybrid", low=_siglip_spec(low_cfg, str(where)), high=_sam_spec(high_cfg, str(where)))
        elif "CLIPVisionTower" in vision_cls:
            vision = VisionSpec("siglip", low=_siglip_spec(vision_params, str(where)))
        else:
            raise CheckpointError(f"unknown vision class {vision_cls!r} in {where}; "
                                  "expected CLIPVisionTower or HybridVisionTower")
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"{where}: vision_config holds a value that is not a number ({_one_line(exc)[:120]}); "
                              "re-download the model") from None

    aligner_cls, aligner_params = _part(config, "aligner_config", folder)
    projector_type = aligner_params.get("projector_type")
    if "MlpProjector" not in aligner_cls or projector_type not in PROJECTOR_TYPES:
        raise CheckpointError(f"unknown aligner {aligner_cls!r}/{projector_type!r} in {where}; "
                              f"expected MlpProjector with one of {', '.join(PROJECTOR_TYPES)}")
    try:
        aligner = AlignerSpec(
            projector_type=projector_type, input_dim=int(aligner_params["input_dim"]),
            n_embed=int(aligner_params["n_embed"]), depth=int(aligner_params.get("depth", 1)),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"{where}: aligner_config params lack a valid {exc}; re-download the model") from None

    language = config.get("language_config")
    if not isinstance(language, dict):
        raise CheckpointError(f"{where} has no language_config; this is not a DeepSeek-VL checkpoint")

    processor = read_json(folder / "processor_config.json", required=False)
    spec = ModelSpec(
        vision=vision, aligner=aligner, language=language,
        image_tag=str(processor.get("image_tag", "<image_placeholder>")),
        num_image_tokens=int(processor.get("num_image_tokens", 576)),
        sft_format=str(processor.get("sft_format", "deepseek")),
        preprocessor=read_json(folder / "preprocessor_config.json"),
        tokenizer_config=read_json(folder / "tokenizer_config.json"),
        special_tokens_map=read_json(folder / "special_tokens_map.json", required=False),
    )
    return _checked(spec, folder)


def _checked(spec: ModelSpec, folder: Path) -> ModelSpec:
    """The checks every layout's spec passes before anything is built."""
    check_limits(spec, folder / "config.json")
    if spec.num_image_tokens != spec.vision.num_tokens:
        raise CheckpointError(
            f"{folder}: processor_config.json says {spec.num_image_tokens} image tokens "
            f"but the vision tower makes {spec.vision.num_tokens}; re-download the model"
        )
    return spec


# -- limits ------------------------------------------------------------------------
# Sizes far beyond any DeepSeek-VL model (the 7B has 30 layers of 4096, a
# 102400-token vocabulary, towers of 24 and 12 blocks) but small enough that
# building the model on the meta device stays cheap. A config over them is
# refused before anything is built: 200000 layers once took minutes and all
# the memory. Sizes within them must still match the weight files' headers
# (``checkpoint.check_config_against_weights``). docs/security.md lists them.
LANGUAGE_LIMITS: dict[str, int] = {
    "num_hidden_layers": 256,
    "hidden_size": 32768,
    "intermediate_size": 262144,
    "vocab_size": 1 << 20,
    "num_attention_heads": 1024,
    "num_key_value_heads": 1024,
    "max_position_embeddings": 1 << 20,
}
MAX_TOWER_LAYERS = 256
MAX_TOWER_WIDTH = 16384
MAX_TOWER_HEADS = 1024
MAX_IMAGE_SIZE = 4096  # pixels a side, for the towers and the preprocessor
MAX_PATCH_GRID = 256  # image_size // patch_size
MAX_IMAGE_TOKENS = 4096
MAX_ALIGNER_DIM = 65536
MAX_ALIGNER_DEPTH = 64


def _within(value: Any, what: str, where: Path, high: int, low: int = 1) -> int:
    """``value`` as an int in ``low..high``, else a one-line ``CheckpointError``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or not low <= value <= high:
        shown = repr(value) if not isinstance(value, int | float) or isinstance(value, bool) else f"{value:,}"
        raise CheckpointError(
            f"{where}: {what} is {shown[:40]}, outside {low:,}..{high:,}; this is not a usable DeepSeek-VL config"
        )
    return int(value)


def _check_tower(tower: SiglipSpec | SamSpec, name: str, where: Path) -> None:
    _within(tower.layers, f"{name} layers", where, MAX_TOWER_LAYERS)
    _within(tower.width, f"{name} width", where, MAX_TOWER_WIDTH)
    _within(tower.heads, f"{name} heads", where, MAX_TOWER_HEADS)
    _within(tower.image_size, f"{name} image_size", where, MAX_IMAGE_SIZE)
    _within(tower.patch_size, f"{name} patch_size", where, tower.image_size)
    _within(tower.image_size // tower.patch_size, f"{name} patches a side (image_size // patch_size)", where,
            MAX_PATCH_GRID)
    if isinstance(tower, SiglipSpec):
        if not 0 < tower.mlp_ratio <= 16:
            raise CheckpointError(f"{where}: {name} mlp_ratio is {tower.mlp_ratio}, outside 0..16; "
                                  "this is not a usable DeepSeek-VL config")
        return
    _within(tower.window_size, f"{name} window_size", where, MAX_PATCH_GRID)
    _within(tower.out_chans, f"{name} out_chans", where, MAX_TOWER_WIDTH)
    _within(len(tower.downsample_channels), f"{name} downsample_channels count", where, 8, low=0)
    for channels in tower.downsample_channels:
        _within(channels, f"{name} downsample_channels entry", where, MAX_TOWER_WIDTH)
    _within(tower.resample_size, f"{name} resample_size", where, MAX_IMAGE_SIZE)
    _within(len(tower.global_attn_indexes), f"{name} global_attn_indexes count", where, tower.layers)
    for index in tower.global_attn_indexes:
        _within(index, f"{name} global_attn_indexes entry", where, tower.layers - 1, low=0)


def check_limits(spec: ModelSpec, where: Path) -> None:
    """Refuse a config whose sizes are beyond any real model's, before anything is built."""
    section = "text_config" if spec.layout == "converted" else "language_config"
    for key, high in LANGUAGE_LIMITS.items():
        if key in spec.language:
            _within(spec.language[key], f"{section} {key}", where, high)
    _check_tower(spec.vision.low, "vision tower", where)
    if spec.vision.high is not None:
        _check_tower(spec.vision.high, "high-resolution vision tower", where)
    _within(spec.num_image_tokens, "num_image_tokens", where, MAX_IMAGE_TOKENS)
    _within(spec.aligner.input_dim, "aligner input_dim", where, MAX_ALIGNER_DIM)
    _within(spec.aligner.n_embed, "aligner n_embed", where, MAX_ALIGNER_DIM)
    _within(spec.aligner.depth, "aligner depth", where, MAX_ALIGNER_DEPTH)


__all__ = [
    "AlignerSpec", "ModelSpec", "SamSpec", "SiglipSpec", "VisionSpec", "read_spec", "read_json", "check_limits",
    "SIGLIP_PRESETS", "SAM_PRESETS", "LANGUAGE_LIMITS", "MAX_JSON_BYTES", "MAX_TOKENIZER_BYTES",
]
