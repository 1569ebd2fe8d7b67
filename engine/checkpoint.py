"""Weights of a DeepSeek-VL checkpoint: find them, check them, load them.

A checkpoint in transformers' converted layout is presented under the
original names and shapes (``converted.ConvertedNames``), so every check
below holds for it unchanged.

Tensors go one at a time from the file straight to the target device and
dtype and are assigned into a model built on the ``meta`` device, so no full
float32 copy of the model ever sits in RAM. ``.bin`` files are read only
through ``torch.load(weights_only=True)``: loading never runs code from data.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .converted import ConvertedNames, is_converted
from .errors import CheckpointError
from .files import UnusableFileError, fd_path, open_regular, read_regular
from .spec import MAX_JSON_BYTES, ModelSpec, read_json
from .types import LoadProgress

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

# Parts of the original checkpoint that upstream builds but never runs:
# SigLIP's attention-pooling head (ignore_head=True) and the hybrid tower's
# two LayerNorms that its forward never calls. Rotary caches are derived.
IGNORED_KEYS = (
    re.compile(r"(^|\.)attn_pool\."),
    re.compile(r"^vision_model\.(high|low)_layer_norm\."),
    re.compile(r"rotary_emb\.inv_freq$"),
)
REMAP_BYTES = 256 * 1024 * 1024
# The most read from a safetensors JSON header (upstream's 7B: about 100 kB;
# safetensors itself allows 100 MB).
MAX_HEADER_BYTES = 16 << 20
# Upstream's SAM MLP is ``lin1``/``lin2``; timm's is ``fc1``/``fc2``.
_SAM_MLP = re.compile(r"^(vision_model\.vision_tower_high\.vision_tower\.blocks\.\d+\.mlp\.)lin([12])\.")


ProgressCallback = Callable[[LoadProgress], None]


def module_key(original: str) -> str:
    return _SAM_MLP.sub(r"\1fc\2.", original)


def original_key(module_name: str) -> str:
    return re.sub(
        r"^(vision_model\.vision_tower_high\.vision_tower\.blocks\.\d+\.mlp\.)fc([12])\.", r"\1lin\2.", module_name
    )


def is_ignored(original: str) -> bool:
    return any(p.search(original) for p in IGNORED_KEYS)


class WeightSource:
    """The weight files of one folder, with their tensor names and shapes read from headers."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files = self._find_files(folder)
        self.format = "safetensors" if self.files[0].suffix == ".safetensors" else "bin"
        self._bin_cache: dict[Path, dict] = {}
        config = read_json(folder / "config.json", required=False)
        self._converted_config = config if is_converted(config) else None
        self._names: ConvertedNames | None = None

    @property
    def layout(self) -> str:
        return "original" if self._converted_config is None else "converted"

    def disk_name(self, original: str) -> str:
        """The name(s) an original-layout tensor has in the files, for messages."""
        return self._names.disk_name(original) if self._names is not None else original

    @staticmethod
    def _find_files(folder: Path) -> list[Path]:
        for single, index in (
            ("model.safetensors", "model.safetensors.index.json"),
            ("pytorch_model.bin", "pytorch_model.bin.index.json"),
        ):
            if (folder / index).exists():
                try:
                    weight_map = json.loads(read_regular(folder / index, MAX_JSON_BYTES))["weight_map"]
                    names = sorted({str(name) for name in weight_map.values()})
                    if any(Path(name).name != name or name in (".", "..") for name in names):
                        raise CheckpointError(f"{folder / index} names a weight file outside {folder}; "
                                              "re-download the model")
                    files = [folder / name for name in names]
                except UnusableFileError as exc:
                    raise CheckpointError(f"{exc}; re-download the model") from None
                except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
                    files = []
                if not files:
                    raise CheckpointError(f"{folder / index} is not a valid weight index; re-download the model")
                missing = [f.name for f in files if not f.exists()]
                if missing:
                    raise CheckpointError(f"{folder} is missing weight shard(s) {', '.join(missing[:3])}; "
                                          "re-download the model")
                return files
            if (folder / single).exists():
                return [folder / single]
        raise CheckpointError(
            f"{folder} has no weights (model.safetensors, a sharded safetensors index, or pytorch_model.bin); "
            "re-download the model"
        )

    def shapes(self) -> dict[str, tuple[tuple[int, ...], Path]]:
        """Every tensor's shape and file from the headers, under the original layout's names."""
        out = self._disk_shapes()
        if self._converted_config is None:
            return out
        self._names = ConvertedNames(self._converted_config, out)
        return dict(self._names.shapes)

    def _disk_shapes(self) -> dict[str, tuple[tuple[int, ...], Path]]:
        out: dict[str, tuple[tuple[int, ...], Path]] = {}
        for path in self.files:
            if self.format == "safetensors":
                out.update({k: (tuple(v), path) for k, v in _safetensors_header_shapes(path).items()})
            else:
                out.update({k: (tuple(t.shape), path) for k, t in self._bin(path).items()})
        return out

    def _bin(self, path: Path) -> dict:
        if path not in self._bin_cache:
            try:
                with open_regular(path) as handle:
                    same_file = fd_path(handle, path)  # the file checked, not whatever the path names later
                    try:
                        data = torch.load(same_file, map_location="cpu", weights_only=True, mmap=True)
                    except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
                        handle.seek(0)
                        data = torch.load(handle, map_location="cpu", weights_only=True)
            except UnusableFileError as exc:
                raise CheckpointError(f"{exc}; re-download the model") from None
            except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
                raise CheckpointError(f"cannot read {path} safely ({' '.join(str(exc).split())[:160]}); "
                                      "re-download the model") from None
            self._bin_cache[path] = data.get("state_dict", data) if isinstance(data, dict) else {}
        return self._bin_cache[path]

    def tensors(self, names_by_file: dict[Path, list[str]], device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
        """``(original name, tensor)`` for the names asked, read file by file."""
        if self._converted_config is None:
            yield from self._read(names_by_file, device)
            return
        if self._names is None:
            self.shapes()
        assert self._names is not None
        entries = self._names.entries
        wanted: dict[str, list[str]] = {}  # file name -> the originals it is part of
        by_file: dict[Path, list[str]] = {}
        disk = self._names.disk_files
        for original in (name for names in names_by_file.values() for name in names):
            for part in entries[original].parts:
                if part not in wanted:
                    by_file.setdefault(disk[part], []).append(part)
                wanted.setdefault(part, []).append(original)
        # A fused qkv waits for its three parts (which may lie in different shards).
        pending: dict[str, dict[str, torch.Tensor]] = {}
        for part, tensor in self._read(by_file, device):
            for original in wanted[part]:
                entry = entries[original]
                got = pending.setdefault(original, {})
                got[part] = tensor
                if len(got) == len(entry.parts):
                    del pending[original]
                    yield original, entry.build([got[p] for p in entry.parts])

    def _read(self, names_by_file: dict[Path, list[str]], device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
        for path, names in names_by_file.items():
            if self.format == "safetensors":
                from safetensors import safe_open

                target = "cpu" if device.type == "meta" else str(device)
                try:
                    checked = open_regular(path)  # safe_open takes a path: hand it this very file
                except OSError as exc:
                    raise CheckpointError(f"cannot read {path} ({exc.strerror or exc}); "
                                          "re-download the model") from None
                with checked:
                    handle, mapped_bytes = None, 0
                    for name in names:
                        # A mapping held open keeps every page read so far resident,
                        # which would add the file's size to peak RSS; reopening
                        # every REMAP_BYTES bounds that at little cost.
                        if handle is None or mapped_bytes > REMAP_BYTES:
                            handle, mapped_bytes = safe_open(fd_path(checked, path), framework="pt", device=target), 0
                        tensor = handle.get_tensor(name)
                        mapped_bytes += tensor.numel() * tensor.element_size()
                        yield name, tensor
                    handle = None
            else:
                data = self._bin(path)
                for name in names:
                    yield name, data[name]
                self._bin_cache.pop(path, None)


def _safetensors_header_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors header; also checks the file holds all the data it lists."""
    try:
        # Only a regular file (a FIFO here once hung the loader), and its size from the opened file.
        with open_regular(path) as handle:
            file_size = os.fstat(handle.fileno()).st_size
            size = int.from_bytes(handle.read(8), "little")
            if size <= 0 or size > min(MAX_HEADER_BYTES, file_size - 8):
                raise ValueError(f"bad header size {size}: "
                                 f"at most {MAX_HEADER_BYTES} bytes within a file of {file_size}")
            header = json.loads(handle.read(size))
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        data_end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
        if 8 + size + data_end > file_size:
            raise ValueError(f"the file is truncated: {file_size} bytes, the header needs {8 + size + data_end}")
        shapes = {k: [int(d) for d in v["shape"]] for k, v in tensors.items()}
        if any(d < 0 for shape in shapes.values() for d in shape):
            raise ValueError("a tensor has a negative dimension")
        return shapes
    except UnusableFileError as exc:
        raise CheckpointError(f"{exc}; re-download the model") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file ({exc}); re-download the model") from None


def _describe(keys: list[str]) -> str:
    shown = ", ".join(sorted(keys)[:4])
    return f"{shown} and {len(keys) - 4} more" if len(keys) > 4 else shown


_LAYER_INDEX = re.compile(r"^(\d+)\.")


def _count_blocks(on_file: dict[str, Any], prefix: str) -> int:
    """How many numbered blocks (``prefix{N}.``) the weight files hold: the highest N plus one."""
    found = [_LAYER_INDEX.match(key[len(prefix):]) for key in on_file if key.startswith(prefix)]
    return max((int(m.group(1)) + 1 for m in found if m), default=0)


def check_config_against_weights(
    spec: ModelSpec, language: PretrainedConfig, on_file: dict[str, tuple[tuple[int, ...], Path]], folder: Path
) -> None:
    """Refuse a config that describes another model than the weight headers, before anything is built.

    Checks the layer counts of the language model and the vision towers and
    the main sizes; every other tensor's shape is checked against the model
    (built on meta) in ``load_weights``, still before anything is allocated.
    """
    towers: list[tuple[str, str, int, int]] = []  # (what, prefix, layers, width)
    if spec.vision.kind == "hybrid" and spec.vision.high is not None:
        towers.append(("vision tower", "vision_model.vision_tower_low.vision_tower.",
                       spec.vision.low.layers, spec.vision.low.width))
        towers.append(("high-resolution vision tower", "vision_model.vision_tower_high.vision_tower.",
                       spec.vision.high.layers, spec.vision.high.width))
    else:
        towers.append(("vision tower", "vision_model.vision_tower.", spec.vision.low.layers, spec.vision.low.width))
    counts = [("language", "language_model.model.layers.", int(language.num_hidden_layers))]
    counts += [(what, prefix + "blocks.", layers) for what, prefix, layers, _ in towers]
    for what, prefix, configured in counts:
        held = _count_blocks(on_file, prefix)
        if held != configured:
            raise CheckpointError(
                f"{folder}: config.json configures {configured} {what} layers but the weights hold {held}; "
                "is config.json from the same model?"
            )
    expected = {"language_model.model.embed_tokens.weight": (int(language.vocab_size), int(language.hidden_size))}
    if int(language.num_hidden_layers) > 0:
        gate = "language_model.model.layers.0.mlp.gate_proj.weight"
        expected[gate] = (int(language.intermediate_size), int(language.hidden_size))
    for _, prefix, _, width in towers:
        proj = on_file.get(prefix + "patch_embed.proj.weight")
        if proj is not None and proj[0][:1] != (width,):
            raise CheckpointError(
                f"{folder}: weight {prefix}patch_embed.proj.weight has shape {list(proj[0])}, "
                f"the config implies width {width}; is config.json from the same model?"
            )
    for name, shape in expected.items():
        found = on_file.get(name)
        if found is None:
            raise CheckpointError(f"{folder} lacks weights the model needs: {name}; re-download the model")
        if found[0] != shape:
            raise CheckpointError(
                f"{folder}: weight {name} has shape {list(found[0])}, the config implies {list(shape)}; "
                "is config.json from the same model?"
            )


def load_weights(
    model: nn.Module,
    folder: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    progress: ProgressCallback | None = None,
    source: WeightSource | None = None,
    on_file: dict[str, tuple[tuple[int, ...], Path]] | None = None,
    after_assign: Callable[[nn.Module, str], None] | None = None,
) -> None:
    """Check every key and shape, then assign each tensor into ``model`` (built on meta).

    ``source`` and ``on_file`` (its ``shapes()``) may be passed when already read.
    ``after_assign(model, name)`` runs after each tensor is assigned (``quantize.LayerQuantizer``
    quantizes a layer there as soon as its weights are in, so the float ones are freed one by one).
    """
    source = source if source is not None else WeightSource(folder)
    on_file = on_file if on_file is not None else source.shapes()
    expected = {name: tuple(t.shape) for name, t in model.state_dict(keep_vars=True).items()}

    mapped = {module_key(k): k for k in on_file if not is_ignored(k)}
    unexpected = [mapped[k] for k in mapped if k not in expected]
    missing = [original_key(k) for k in expected if k not in mapped]
    if missing:
        named = " (named as in the original layout)" if source.layout == "converted" else ""
        raise CheckpointError(f"{folder} lacks weights the model needs: {_describe(missing)}{named}; "
                              "re-download the model")
    if unexpected:
        shown = [source.disk_name(k) for k in unexpected]
        raise CheckpointError(f"{folder} has weights this architecture does not use: {_describe(shown)}; "
                              "is config.json from the same model?")
    for name, shape in expected.items():
        found = on_file[mapped[name]][0]
        if found != shape:
            # A converted checkpoint's fused or reshaped tensor is named as on disk, shapes as the model holds them.
            raise CheckpointError(f"{folder}: weight {source.disk_name(mapped[name])} has shape {list(found)}, "
                                  f"the config implies {list(shape)}; re-download the model")

    names_by_file: dict[Path, list[str]] = {}
    for name in expected:
        names_by_file.setdefault(on_file[mapped[name]][1], []).append(mapped[name])
    total = len(expected)
    for done, (original, tensor) in enumerate(source.tensors(names_by_file, device), start=1):
        if tensor.is_floating_point():
            tensor = tensor.to(device=device, dtype=dtype)
        else:
            tensor = tensor.to(device=device)
        _assign(model, module_key(original), tensor)
        if after_assign is not None:
            del tensor  # the layer's float weight is freed once quantized
            after_assign(model, module_key(original))
        if progress is not None:
            progress(LoadProgress("load", done, total, f"loading weights {done}/{total}"))


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    else:
        owner._buffers[leaf] = tensor
