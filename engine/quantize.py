"""Weight-only quantization of the language model's linear layers (``load(quantize="int8"|"int4")``).

Decoding reads every weight of the language model once per token, so on a
CPU its speed is bounded by memory bandwidth and on a GPU the weights' size
decides which cards can hold the model. Storing the linear layers' weights
in 8 or 4 bits (activations stay in floating point) answers both.

Kernels are chosen per device by measurement, not by name (5632x2048
matvec, 2 threads of this project's CPU, torch 2.14):

=========================================  ========  ==========================
layer                                      ms/call   note
=========================================  ========  ==========================
fp32 ``F.linear``                           2.3-3.1   the unquantized baseline
bf16 ``F.linear``                           8.4       no fast bf16 GEMV here
torchao ``Int8WeightOnlyConfig``, eager     39        dequantizes every call
aten ``_weight_int8pack_mm``, bf16 in       0.46-1.5  5x the fp32 layer
aten ``_weight_int8pack_mm``, fp32 in       12-16     its slow path
aten ``_weight_int4pack_mm_for_cpu``, bf16  0.31      7x; fp32 in: 20 ms
=========================================  ========  ==========================

So on the CPU the layers call PyTorch's own weight-packed kernels with
bf16 activations (cast in and out of the load dtype per call), and need
no torchao. A 600-token prefill costs about the same as fp32 in int8 and
about twice as much in int4 (86 / 94 / 171 ms per layer call).

Measured but not used: fbgemm's dynamic int8 linear (``quantized::linear_dynamic``,
int8 activations too) read 24 cycled 5632x2048 layers at 0.54 ms a call
against 2.2 ms for ``_weight_int8pack_mm`` and 4.5 ms in fp32 (1 thread),
but it scales each call's input as a whole, so a position's result depends
on the rows it is computed with: greedy answers then differ with and without
prefix reuse (tested), which this engine promises they do not.

On CUDA, torchao's weight-only configs (``Int8WeightOnlyConfig``, and
``Int4WeightOnlyConfig`` on tinygemm's tile-packed layout) are the path that
fuses with ``torch.compile``; ``dsvl_tui.bench.gpucheck`` measures them
where a GPU is lent. Anywhere a mode cannot run (no kernel on this device or
build, torchao missing, a probe that fails) the model loads unquantized
and ``Plan.note`` says why in one line; quantizing never raises.

What is quantized: every ``nn.Linear`` of the language model's decoder
layers (q/k/v/o, gate/up/down) and the output head (``lm_head``), unless the
head is tied to the input embeddings. The vision towers, the aligner, the
embeddings and the norms keep the load dtype. Weights are quantized one
layer at a time as they arrive from the checkpoint (``LayerQuantizer``), so
loading never holds the whole unquantized language model.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from .types import QuantizeMode, parse_quantize

if TYPE_CHECKING:
    from .spec import ModelSpec

# int4 groups along the input dimension: the largest of these dividing it (the CPU kernel takes these sizes).
INT4_GROUP_SIZES = (128, 64, 32)
# The language model's linear layers, by module name in ``DeepSeekVLModel``.
_TARGET = re.compile(r"^language_model\.(model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"
                     r"|lm_head)$")

Kernel = Literal["aten-cpu", "torchao"]
# Which kernels run each mode on each device type, best first (chosen by the measurements above); ``plan``
# takes the first whose probe runs.
KERNELS: dict[str, dict[str, tuple[Kernel, ...]]] = {
    "cpu": {"int8": ("aten-cpu",), "int4": ("aten-cpu",)},
    "cuda": {"int8": ("torchao",), "int4": ("torchao",)},
}


# The torch releases torchao's compiled parts are built for (torchao's compatibility table and release notes):
# up to 0.16 each release is built for one torch release, and a torchao built for another can abort the process as
# it is imported; from 0.17 on they are ABI-stable from torch 2.11 on, and 0.18 needs torch 2.11 or later.
TORCHAO_TORCH_ONLY = {(0, 13): (2, 8), (0, 14): (2, 9), (0, 15): (2, 9), (0, 16): (2, 10)}
TORCHAO_TORCH_FROM = {(0, 17): (2, 11), (0, 18): (2, 11)}

__all__ = ["Int4Linear", "Int8Linear", "LayerQuantizer", "Plan", "QuantizeMode", "decode_weight_bytes",
           "plan", "quantize_linear", "quantized_parameter_count", "torchao_mismatch"]


# -- the layers ----------------------------------------------------------------


class Int8Linear(nn.Module):
    """A linear layer with int8 weights [N, K], one scale per output row (symmetric), bf16 activations.

    Runs ``aten._weight_int8pack_mm``; input and output keep the caller's dtype.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        w = weight.detach()
        scales = (w.abs().amax(dim=1).float() / 127).clamp(min=1e-12)  # [N]
        qweight = torch.empty(w.shape, dtype=torch.int8, device=w.device)
        # Float temporaries of a few MB, not of the whole (output head's 0.8 GB) weight.
        for rows in _row_chunks(len(w)):
            qweight[rows] = torch.round(w[rows].float() / scales[rows, None]).clamp_(-127, 127)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., K] -> [..., N]
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scales)
        out = out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per row"


class Int4Linear(nn.Module):
    """A linear layer with 4-bit weights in groups of ``group_size`` inputs (asymmetric, tinygemm's layout).

    Runs ``aten._weight_int4pack_mm_for_cpu`` with bf16 activations; input
    and output keep the caller's dtype. A weight is ``(q - 8) * scale + zero``.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, group_size: int):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.group_size = group_size
        n, k = weight.shape
        groups = weight.detach().reshape(n, k // group_size, group_size)
        low, high = groups.amin(dim=-1).float(), groups.amax(dim=-1).float()  # [N, K/G]
        scale = ((high - low) / 15).clamp(min=1e-12)
        zero = low + 8 * scale
        packed = []
        for rows in _row_chunks(n):  # packing is per row: chunks keep the temporaries small
            q = torch.round((groups[rows].float() - low[rows, :, None]) / scale[rows, :, None]).clamp_(0, 15)
            packed.append(torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).reshape(-1, k), 1))
        self.register_buffer("packed", torch.cat(packed))
        # [K/G, N, 2]: scale and zero of each group of each output row.
        self.register_buffer("scales_and_zeros",
                             torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16))
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group_size, self.scales_and_zeros)
        out = out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 groups of {self.group_size}"


def _row_chunks(rows: int, size: int = 4096) -> list[slice]:
    """Slices of at most ``size`` rows covering ``rows``; ``size`` a multiple of 64 (int4 packs rows in blocks of
    64)."""
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def int4_group_size(in_features: int) -> int | None:
    """The int4 group size for a layer with ``in_features`` inputs, or None when none divides it."""
    return next((g for g in INT4_GROUP_SIZES if in_features % g == 0), None)


# -- deciding what runs where ----------------------------------------------------


@dataclass
class Plan:
    """What quantization a load will do: ``mode`` is the effective one, ``note`` why it differs from the one asked."""

    mode: QuantizeMode
    kernel: Kernel | None = None
    note: str | None = None


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}"


def _major_minor(version: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def torchao_mismatch(torch_version: str | None = None, torchao_version: str | None = None) -> str | None:
    """Why the installed torchao is not built for this torch (one line), or None: it fits, is not installed, or is
    a release not in the tables above (the probe in ``plan`` then decides). Reads torchao's version from its
    distribution's metadata, without importing it (an unfit build can abort the process as it is imported)."""
    if torchao_version is None:
        try:
            torchao_version = importlib.metadata.version("torchao")
        except importlib.metadata.PackageNotFoundError:
            return None
    torch_version = torch_version or torch.__version__
    ours, theirs = _major_minor(torchao_version), _major_minor(torch_version)
    if ours is None or theirs is None:
        return None
    only = TORCHAO_TORCH_ONLY.get(ours)
    if only is not None and theirs != only:
        return f"torchao {torchao_version} is built for torch {only[0]}.{only[1]}; this is torch {torch_version}"
    since = TORCHAO_TORCH_FROM.get(ours)
    if since is not None and theirs < since:
        return f"torchao {torchao_version} needs torch {since[0]}.{since[1]} or later; this is torch {torch_version}"
    return None


def plan(asked: QuantizeMode, device: torch.device, dtype: torch.dtype) -> Plan:
    """Decide how ``asked`` runs on ``device``: a kernel, or the unquantized model and a one-line note.

    The kernel is probed on a small layer of ``dtype`` first, so a build
    without it (or torchao missing) is found here; this never raises.
    """
    if asked == "none":
        return Plan("none")
    kernels = KERNELS.get(device.type, {}).get(asked, ())
    note = f"{asked} weights have no kernel on {device.type} here; loading unquantized"
    for kernel in kernels:
        mismatch = torchao_mismatch() if kernel == "torchao" else None
        if mismatch:
            note = f"{asked} on {device.type}: no torchao for this torch ({mismatch}); loading unquantized"
            continue
        try:
            probe = nn.Linear(256, 64, bias=False, device=device, dtype=dtype)
            quantized = quantize_linear(probe, asked, kernel)
            if quantized is None:
                raise RuntimeError("the probe layer was not quantized")
            with torch.inference_mode():
                quantized(torch.ones(2, 256, device=device, dtype=dtype))
        except ImportError:
            note = f"{asked} on {device.type} needs torchao, which is not installed; loading unquantized"
        except Exception as exc:  # noqa: BLE001 - any kernel failure means it cannot run here: try the next, else unquantized
            note = f"{asked} cannot run on {device.type} here ({_short(exc)}); loading unquantized"
        else:
            return Plan(asked, kernel)
    return Plan("none", note=note)


def quantize_linear(layer: nn.Linear, mode: QuantizeMode, kernel: Kernel) -> nn.Module | None:
    """A quantized stand-in for ``layer`` (or ``layer`` itself, changed in place, for torchao), or None when its shape
    does not fit."""
    if kernel == "aten-cpu":
        if mode == "int8":
            return Int8Linear(layer.weight, layer.bias)
        group = int4_group_size(layer.in_features)
        if group is None or layer.out_features % 16:  # the CPU kernel packs rows in 16s
            return None
        return Int4Linear(layer.weight, layer.bias, group)
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    if mode == "int8":
        quantize_(layer, Int8WeightOnlyConfig())
        return layer
    group = int4_group_size(layer.in_features)
    if group is None:
        return None
    # tinygemm's tile-packed layout: bf16 only.
    layer.to(torch.bfloat16)
    quantize_(layer, Int4WeightOnlyConfig(group_size=group, int4_packing_format="tile_packed_to_4d"))
    return _CastTo(layer, torch.bfloat16)


class _CastTo(nn.Module):
    """Runs ``inner`` in ``dtype``; input and output keep the caller's dtype."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner = inner
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(self.dtype)).to(x.dtype)


# -- quantizing while loading ------------------------------------------------------


class LayerQuantizer:
    """Quantizes each target layer of a model being loaded as soon as its weights have all arrived.

    ``checkpoint.load_weights`` calls ``assigned(model, name)`` after each
    tensor it assigns; the float weight of a quantized layer is then
    unreferenced and freed, so at most one unquantized layer sits in memory.
    """

    @classmethod
    def for_load(cls, quantize: str | None, spec: ModelSpec, device: torch.device, dtype: torch.dtype
                 ) -> LayerQuantizer:
        """The quantizer of one load: ``quantize`` as given by the user (a ValueError names the modes), the
        kernel ``plan`` finds for ``device``, and a head tied to the embeddings left alone."""
        return cls(plan(parse_quantize(quantize), device, dtype),
                   tied_head=bool(spec.language.get("tie_word_embeddings", False)))

    def __init__(self, plan: Plan, *, tied_head: bool = False):
        self.plan = plan
        self.tied_head = tied_head
        self.quantized = 0
        self.kept: list[str] = []  # target layers left in the load dtype (a shape the kernel cannot take)

    def is_target(self, module_name: str) -> bool:
        if self.plan.mode == "none" or not _TARGET.match(module_name):
            return False
        return not (self.tied_head and module_name == "language_model.lm_head")

    def assigned(self, model: nn.Module, tensor_name: str) -> None:
        module_name = tensor_name.rpartition(".")[0]
        if not self.is_target(module_name):
            return
        layer = model.get_submodule(module_name)
        if not isinstance(layer, nn.Linear) or any(t.is_meta for t in layer.parameters()):
            return  # already quantized, or its bias is still to come
        assert self.plan.kernel is not None
        replacement = quantize_linear(layer, self.plan.mode, self.plan.kernel)
        if replacement is None:
            self.kept.append(module_name)
            return
        owner_name, _, leaf = module_name.rpartition(".")
        setattr(model.get_submodule(owner_name), leaf, replacement)
        self.quantized += 1

    def note(self) -> str | None:
        """The plan's note, or one about layers whose shape kept them unquantized."""
        if self.plan.note or not self.kept:
            return self.plan.note
        return (f"{len(self.kept)} of {len(self.kept) + self.quantized} language-model layers stay unquantized "
                f"(the {self.plan.mode} kernel does not take their shape)")


# -- what a decoded token reads ----------------------------------------------------------


def decode_weight_bytes(language_model: nn.Module, embeddings: nn.Module) -> int:
    """Bytes of weights one decoded token reads: every tensor of ``language_model`` but the ``embeddings`` table.

    (One row of the embeddings is read per token; the rotary tables are derived buffers of a few kB.)
    """
    skip = {id(t) for t in embeddings.parameters()}
    total = 0
    for tensor in [*language_model.parameters(), *language_model.buffers()]:
        if id(tensor) not in skip:
            total += tensor.numel() * tensor.element_size()
    return total


def quantized_parameter_count(model: nn.Module) -> int:
    """Weights held by quantized layers (which keep them in buffers, not parameters)."""
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, (Int8Linear, Int4Linear)))

