"""The transformers-native ("converted") DeepSeek-VL layout, read into the same model.

Since transformers 4.56, DeepSeek-VL is native there (``model_type``
``deepseek_vl`` / ``deepseek_vl_hybrid``) and Hugging Face's own docs use the
converted repositories (``deepseek-community/deepseek-vl-*``). Their
config.json holds ``text_config`` / ``vision_config`` (SigLIP) /
``high_res_vision_config`` (SAM) instead of the original ``language_config`` /
``vision_config.cls`` / ``aligner_config``, and their weights carry other
names: SigLIP's fused qkv split into q/k/v and its ``pos_embed`` squeezed,
SAM's necks and downsampling convolutions renamed, the aligner renamed.

Nothing here builds a second model. ``converted_spec`` turns the config into
the same ``ModelSpec`` the original layout gives (every size through the same
limits), and ``ConvertedNames`` presents the weight files under the original
names and shapes, so ``checkpoint.check_config_against_weights`` and
``load_weights`` check and load them exactly as they do an original
checkpoint; it fuses q/k/v back into qkv and restores ``pos_embed``'s leading
axis as each tensor is read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .spec import (
    MAX_ALIGNER_DIM,
    MAX_IMAGE_SIZE,
    MAX_IMAGE_TOKENS,
    MAX_PATCH_GRID,
    MAX_TOWER_HEADS,
    MAX_TOWER_LAYERS,
    MAX_TOWER_WIDTH,
    AlignerSpec,
    ModelSpec,
    SamSpec,
    SiglipSpec,
    VisionSpec,
    _within,
    read_json,
)

CONVERTED_TYPES = ("deepseek_vl", "deepseek_vl_hybrid")
DEFAULT_IMAGE_TAG = "<image_placeholder>"
# transformers writes the chat template into one of these, newest first.
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def is_converted(config: dict[str, Any]) -> bool:
    return config.get("model_type") in CONVERTED_TYPES


def tied_head(config: dict[str, Any]) -> bool:
    """Whether the config asks for the output head tied to the input embeddings.

    transformers' DeepseekVLConfig defaults to yes (its Llama text config to no), but ties only a head the
    files lack: with ``lm_head.weight`` on file it keeps that (``head_on_file``), as the engine does.
    """
    return bool(config.get("tie_word_embeddings", True))


def head_on_file(folder: Path) -> bool:
    """Whether the weight files hold ``lm_head.weight`` (from their headers or index; no tensor is read)."""
    from .checkpoint import WeightSource

    return "lm_head.weight" in WeightSource(folder)._disk_shapes()


# -- config -> ModelSpec ----------------------------------------------------------


def _section(config: dict[str, Any], key: str, model_type: str, where: Path) -> dict[str, Any]:
    part = config.get(key)
    if not isinstance(part, dict):
        found = (", ".join(sorted(k for k in config if k.endswith("_config") and k.isprintable()))[:120]
                 or "no *_config sections")
        raise CheckpointError(f"{where} has model_type {config.get('model_type')!r} but no valid {key!r} section "
                              f"(it has {found}); re-download the model")
    found = part.get("model_type", model_type)
    if found != model_type:
        raise CheckpointError(f"{where}: {key} has model_type {found!r}, expected {model_type!r}; "
                              "this is not a DeepSeek-VL checkpoint")
    return part


def _siglip(part: dict[str, Any], where: Path) -> SiglipSpec:
    width = _within(part.get("hidden_size", 768), "vision_config hidden_size", where, MAX_TOWER_WIDTH)
    hidden = _within(part.get("intermediate_size", 3072), "vision_config intermediate_size", where, 16 * width)
    image_size = _within(part.get("image_size", 224), "vision_config image_size", where, MAX_IMAGE_SIZE)
    # timm builds the MLP of int(width * mlp_ratio) units; where float rounding would lose a unit, half a unit over
    # keeps it.
    ratio = hidden / width
    if int(width * ratio) != hidden:
        ratio = (hidden + 0.5) / width
    return SiglipSpec(
        model_name="converted", image_size=image_size,
        patch_size=_within(part.get("patch_size", 16), "vision_config patch_size", where, image_size),
        width=width,
        layers=_within(part.get("num_hidden_layers", 12), "vision_config num_hidden_layers", where, MAX_TOWER_LAYERS),
        heads=_within(part.get("num_attention_heads", 12), "vision_config num_attention_heads", where, MAX_TOWER_HEADS),
        mlp_ratio=ratio,
    )


def _sam(part: dict[str, Any], low: SiglipSpec, where: Path) -> SamSpec:
    what = "high_res_vision_config"
    layers = _within(part.get("num_hidden_layers", 12), f"{what} num_hidden_layers", where, MAX_TOWER_LAYERS)
    indexes = part.get("global_attn_indexes", [2, 5, 8, 11])
    if not isinstance(indexes, list) or not indexes:
        raise CheckpointError(f"{where}: {what} global_attn_indexes must be a non-empty list; re-download the model")
    image_size = _within(part.get("image_size", 1024), f"{what} image_size", where, MAX_IMAGE_SIZE)
    out = _within(part.get("output_channels", 256), f"{what} output_channels", where, MAX_TOWER_WIDTH // 4)
    return SamSpec(
        model_name="converted", image_size=image_size,
        patch_size=_within(part.get("patch_size", 16), f"{what} patch_size", where, image_size),
        width=_within(part.get("hidden_size", 768), f"{what} hidden_size", where, MAX_TOWER_WIDTH),
        layers=layers,
        heads=_within(part.get("num_attention_heads", 12), f"{what} num_attention_heads", where, MAX_TOWER_HEADS),
        window_size=_within(part.get("window_size", 14), f"{what} window_size", where, MAX_PATCH_GRID),
        global_attn_indexes=tuple(_within(i, f"{what} global_attn_indexes entry", where, layers - 1, low=0)
                                  for i in indexes[:layers]),
        # transformers' DeepseekVLSamVisionProj: two stride-2 convolutions doubling the channels,
        # after a resize to four times the SigLIP grid.
        out_chans=out, downsample_channels=(2 * out, 4 * out),
        resample_size=4 * (low.image_size // low.patch_size),
    )


def _triple(processor: dict[str, Any], key: str, where: Path) -> tuple[float, ...] | None:
    value = processor.get(key)
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        raise CheckpointError(f"{where}: image processor {key} must be 3 numbers; re-download the model")
    return tuple(float(v) for v in value)


def _square(processor: dict[str, Any], key: str, where: Path) -> int:
    size = processor.get(key)
    if not isinstance(size, dict) or size.get("height") != size.get("width"):
        raise CheckpointError(f"{where}: image processor {key} must be a square {{height, width}}; "
                              "re-download the model")
    return _within(size.get("height"), f"image processor {key}", where, MAX_IMAGE_SIZE)


def image_processor_config(folder: Path) -> tuple[dict[str, Any], Path]:
    """The image processor's settings: preprocessor_config.json (transformers 4.x) or processor_config.json's own
    section (5.x)."""
    path = folder / "preprocessor_config.json"
    if path.exists():
        return read_json(path), path
    path = folder / "processor_config.json"
    section = read_json(path, required=False).get("image_processor")
    if not isinstance(section, dict):
        raise CheckpointError(
            f"{folder} has no image processor settings "
            "(no preprocessor_config.json, no image_processor in processor_config.json); re-download the model"
        )
    return section, path


def converted_spec(folder: Path, config: dict[str, Any]) -> ModelSpec:
    """The ``ModelSpec`` of a converted checkpoint: the same towers, aligner and language model as the original."""
    where = folder / "config.json"
    hybrid = config.get("model_type") == "deepseek_vl_hybrid"
    language = dict(_section(config, "text_config", "llama", where))
    # A config without the key ties (transformers' default), yet an untied model (DeepSeek-VL's own are) stores its
    # head.
    language["tie_word_embeddings"] = tied_head(config) and not head_on_file(folder)
    low = _siglip(_section(config, "vision_config", "siglip_vision_model", where), where)
    high = _sam(_section(config, "high_res_vision_config", "sam_vision_model", where), low, where) if hybrid else None

    image_cfg, image_where = image_processor_config(folder)
    normalize = bool(image_cfg.get("do_normalize", True))
    mean, std = _triple(image_cfg, "image_mean", image_where), _triple(image_cfg, "image_std", image_where)
    low_size = _square(image_cfg, "size", image_where)
    preprocessor: dict[str, Any] = {
        "image_size": low_size,
        "min_size": _within(image_cfg.get("min_size", 14), "image processor min_size", image_where, MAX_IMAGE_SIZE,
                            low=0),
        "rescale_factor": image_cfg.get("rescale_factor", 1 / 255), "do_normalize": normalize,
        "image_mean": list(mean) if mean else None, "image_std": list(std) if std else None,
    }
    if low_size != low.image_size:
        raise CheckpointError(f"{image_where}: images are {low_size} pixels a side but the vision tower takes "
                              f"{low.image_size}; re-download the model")
    hidden = _within(language.get("hidden_size", 4096), "text_config hidden_size", where, MAX_ALIGNER_DIM)
    if high is None:
        vision = VisionSpec("siglip", low=low)
        aligner = AlignerSpec("mlp_gelu", input_dim=low.width, n_embed=hidden, depth=2)
    else:
        # The engine's hybrid tower normalises inside each branch, from the one high-resolution picture (as upstream).
        high_mean, high_std = (_triple(image_cfg, "high_res_image_mean", image_where),
                               _triple(image_cfg, "high_res_image_std", image_where))
        high_size = _square(image_cfg, "high_res_size", image_where)
        if high_size != high.image_size:
            raise CheckpointError(
                f"{image_where}: high-resolution images are {high_size} pixels a side "
                f"but the SAM tower takes {high.image_size}; re-download the model"
            )
        low = SiglipSpec(**{**low.__dict__, "pixel_mean": mean if normalize else None,
                            "pixel_std": std if normalize else None})
        high = SamSpec(**{**high.__dict__, "pixel_mean": high_mean if normalize else None,
                          "pixel_std": high_std if normalize else None})
        vision = VisionSpec("hybrid", low=low, high=high)
        # The aligner takes both towers at one width (SAM's 4 * output_channels and SigLIP's width); the shape check
        # catches others.
        aligner = AlignerSpec("low_high_hybrid_split_mlp_gelu", input_dim=low.width, n_embed=hidden, depth=2)
        preprocessor.update(image_size=high_size, do_normalize=False,
                            image_mean=list(high_mean) if high_mean else None,
                            image_std=list(high_std) if high_std else None)

    processor = read_json(folder / "processor_config.json", required=False)
    tokenizer_config = read_json(folder / "tokenizer_config.json")
    image_tag = tokenizer_config.get("image_token", DEFAULT_IMAGE_TAG)
    return ModelSpec(
        vision=vision, aligner=aligner, language=language,
        image_tag=image_tag if isinstance(image_tag, str) and image_tag else DEFAULT_IMAGE_TAG,
        num_image_tokens=_within(processor.get("num_image_tokens", 576), "processor num_image_tokens", where,
                                 MAX_IMAGE_TOKENS),
        sft_format="deepseek", preprocessor=preprocessor, tokenizer_config=tokenizer_config,
        special_tokens_map=read_json(folder / "special_tokens_map.json", required=False), layout="converted",
    )


# -- weight names ------------------------------------------------------------------

_SAM_NECK = {"conv1": "0", "layer_norm1": "1", "conv2": "2", "layer_norm2": "3"}


def _rules(hybrid: bool) -> list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]]:
    """(converted name pattern, its original name), the inverse of transformers' conversion script."""
    low = "vision_model.vision_tower_low.vision_tower." if hybrid else "vision_model.vision_tower."
    high = "vision_model.vision_tower_high.vision_tower."
    siglip = "model.vision_model."
    sam = "model.high_res_vision_model.vision_encoder."
    aligner = (
        {"vision_proj": "low_up_proj", "high_res_vision_proj": "high_up_proj", "proj": "layers.1"}
        if hybrid else {"linear1": "layers.0", "linear2": "layers.2"}
    )
    table: list[tuple[str, Callable[[re.Match[str]], str]]] = [
        (r"model\.language_model\.(.+)", lambda m: f"language_model.model.{m[1]}"),
        (r"lm_head\.weight", lambda m: "language_model.lm_head.weight"),
        (r"model\.aligner\.(\w+)\.(weight|bias)", lambda m: f"aligner.{aligner.get(m[1], m[1])}.{m[2]}"),
        (re.escape(siglip) + r"embeddings\.patch_embedding\.(weight|bias)", lambda m: f"{low}patch_embed.proj.{m[1]}"),
        (re.escape(siglip) + r"embeddings\.position_embedding\.weight", lambda m: f"{low}pos_embed"),
        (re.escape(siglip) + r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)",
         lambda m: f"{low}blocks.{m[1]}.attn.qkv.{m[3]}"),
        (re.escape(siglip) + r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)",
         lambda m: f"{low}blocks.{m[1]}.attn.proj.{m[2]}"),
        (re.escape(siglip) + r"encoder\.layers\.(\d+)\.layer_norm([12])\.(weight|bias)",
         lambda m: f"{low}blocks.{m[1]}.norm{m[2]}.{m[3]}"),
        (re.escape(siglip) + r"encoder\.layers\.(\d+)\.mlp\.(fc[12]\.(?:weight|bias))",
         lambda m: f"{low}blocks.{m[1]}.mlp.{m[2]}"),
        (re.escape(siglip) + r"post_layernorm\.(weight|bias)", lambda m: f"{low}norm.{m[1]}"),
        # The attention-pooling head: built by transformers, never run by DeepSeek-VL (checkpoint.IGNORED_KEYS).
        (re.escape(siglip) + r"head\.(.+)", lambda m: f"{low}attn_pool.{m[1]}"),
        (re.escape(sam) + r"pos_embed", lambda m: f"{high}pos_embed"),
        (re.escape(sam) + r"patch_embed\.projection\.(weight|bias)", lambda m: f"{high}patch_embed.proj.{m[1]}"),
        (re.escape(sam) + r"layers\.(\d+)\.layer_norm([12])\.(weight|bias)",
         lambda m: f"{high}blocks.{m[1]}.norm{m[2]}.{m[3]}"),
        (re.escape(sam) + r"layers\.(\d+)\.attn\.(rel_pos_[hw]|(?:qkv|proj)\.(?:weight|bias))",
         lambda m: f"{high}blocks.{m[1]}.attn.{m[2]}"),
        (re.escape(sam) + r"layers\.(\d+)\.mlp\.(lin[12]\.(?:weight|bias))",
         lambda m: f"{high}blocks.{m[1]}.mlp.{m[2]}"),
        (re.escape(sam) + r"neck\.(conv[12]|layer_norm[12])\.(weight|bias)",
         lambda m: f"{high}neck.{_SAM_NECK[m[1]]}.{m[2]}"),
        (r"model\.high_res_vision_neck\.(conv[12]|layer_norm[12])\.(weight|bias)",
         lambda m: f"{high}neck_hd.{_SAM_NECK[m[1]]}.{m[2]}"),
        (r"model\.high_res_vision_proj\.conv([12])\.weight", lambda m: f"{high}downsamples.{int(m[1]) - 1}.weight"),
        (r"model\.high_res_vision_alpha", lambda m: f"{high}hd_alpha_downsamples"),
    ]
    return [(re.compile(pattern + r"\Z"), build) for pattern, build in table]


@dataclass(frozen=True)
class Entry:
    """One original-layout tensor: the converted tensors it is made of, and how."""

    parts: tuple[str, ...]  # q, k, v for a fused qkv; else one name
    op: str  # "copy", "fuse" (concatenate q, k, v) or "unsqueeze" (SigLIP's pos_embed gets its batch axis back)

    def build(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        if self.op == "fuse":
            return torch.cat(tensors, dim=0)
        if self.op == "unsqueeze":
            return tensors[0].unsqueeze(0)
        return tensors[0]

    def describe(self) -> str:
        return "/".join(self.parts) if self.op == "fuse" else self.parts[0]


class ConvertedNames:
    """A converted checkpoint's tensors under their original names and shapes."""

    def __init__(self, config: dict[str, Any], on_disk: dict[str, tuple[tuple[int, ...], Path]]):
        rules = _rules(config.get("model_type") == "deepseek_vl_hybrid")
        self.entries: dict[str, Entry] = {}
        self.shapes: dict[str, tuple[tuple[int, ...], Path]] = {}
        self.disk_files = {name: path for name, (_, path) in on_disk.items()}
        pieces: dict[str, dict[str, str]] = {}  # qkv name -> {"q": converted name, ...}
        for name, (shape, path) in on_disk.items():
            original = None
            for pattern, build in rules:
                match = pattern.match(name)
                if match:
                    original = build(match)
                    if ".self_attn." in name and re.search(r"\.[qkv]_proj\.", name) and ".attn.qkv." in original:
                        pieces.setdefault(original, {})[re.search(r"\.([qkv])_proj\.", name)[1]] = name  # type: ignore[index]
                        original = ""
                    break
            if original == "":
                continue
            if original is None:  # not a DeepSeek-VL tensor: kept, so the loader names it as unexpected
                original = name
            op = ("unsqueeze" if original.endswith("pos_embed") and "vision_tower_high" not in original
                  and len(shape) == 2 else "copy")
            self._add(original, Entry((name,), op), (1, *shape) if op == "unsqueeze" else shape, path)
        for original, parts in pieces.items():
            if set(parts) != {"q", "k", "v"}:  # an incomplete set: left under its own names for the loader to report
                for name in parts.values():
                    self._add(name, Entry((name,), "copy"), *on_disk[name])
                continue
            names = (parts["q"], parts["k"], parts["v"])
            shapes = {on_disk[n][0] for n in names}
            if len(shapes) != 1 or not next(iter(shapes)):
                shown = ", ".join(f"{n} {list(on_disk[n][0])}" for n in names)
                raise CheckpointError(f"the q/k/v projections differ in shape ({shown}); re-download the model")
            shape = next(iter(shapes))
            self._add(original, Entry(names, "fuse"), (3 * shape[0], *shape[1:]), on_disk[names[0]][1])
        if tied_head(config) and "language_model.model.embed_tokens.weight" in self.entries \
                and "language_model.lm_head.weight" not in self.entries:
            # A tied head is the embedding matrix itself (transformers stores it once); a head on file is the head.
            embed = self.entries["language_model.model.embed_tokens.weight"]
            self.entries["language_model.lm_head.weight"] = embed
            self.shapes["language_model.lm_head.weight"] = self.shapes["language_model.model.embed_tokens.weight"]

    def _add(self, original: str, entry: Entry, shape: tuple[int, ...], path: Path) -> None:
        self.entries[original] = entry
        self.shapes[original] = (tuple(shape), path)

    def disk_name(self, original: str) -> str:
        entry = self.entries.get(original)
        return entry.describe() if entry is not None else original


__all__ = ["CONVERTED_TYPES", "ConvertedNames", "Entry", "converted_spec", "head_on_file", "image_processor_config",
           "is_converted", "tied_head"]
