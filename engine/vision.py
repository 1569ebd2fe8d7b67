"""Vision towers and aligners of DeepSeek-VL, built on timm.

Module and attribute names mirror upstream's so that the original
checkpoint's keys land in place (``vision_model.vision_tower.blocks.0...``);
the one rename (SAM's ``mlp.lin1`` is timm's ``mlp.fc1``) lives in
``checkpoint.py``.

Shapes at the module boundaries:
    SiglipBackbone:   [B, 3, S, S] -> [B, (S/p)^2, width]
    DeepSeekSamViT:   [B, 3, S, S] -> [B, C_out, g, g]
    HybridTower:      [B, 3, S_high, S_high] -> ([B, g*g, C_out], [B, N_low, width])
    aligners:         tower output -> [B, N, n_embed]
"""

from __future__ import annotations

import copy
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_sam import VisionTransformerSAM
from torch import nn

from .spec import AlignerSpec, SamSpec, SiglipSpec, VisionSpec

_layer_norm = partial(nn.LayerNorm, eps=1e-6)


def _normalize(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    if mean is None or std is None:
        return pixels
    mean_t = torch.tensor(mean, device=pixels.device, dtype=pixels.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=pixels.device, dtype=pixels.dtype).view(1, -1, 1, 1)
    return (pixels - mean_t) / std_t


class SiglipBackbone(VisionTransformer):
    """SigLIP ViT as upstream runs it: every selected block, final norm, no pooling head."""

    def __init__(self, spec: SiglipSpec):
        super().__init__(
            img_size=spec.image_size,
            patch_size=spec.patch_size,
            embed_dim=spec.width,
            depth=spec.layers,
            num_heads=spec.heads,
            mlp_ratio=spec.mlp_ratio,
            qkv_bias=True,
            class_token=False,
            global_pool="",
            num_classes=0,
            norm_layer=_layer_norm,
            act_layer=nn.GELU,
            weight_init="skip",
        )

    # timm >= 1.0.2x added attn_mask/is_causal to forward; this tower takes pixels only (timm >= 1.0.9).
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.forward_features(pixels)


class DeepSeekSamViT(VisionTransformerSAM):
    """SAM ViT-B with DeepSeek's additions.

    Upstream adds a second neck (``neck_hd``) on the first global-attention
    block's output, two stride-2 convolutions (``downsamples``) shared by
    both paths after a bilinear resize, and a learned scalar mixing them.
    """

    def __init__(self, spec: SamSpec):
        super().__init__(
            img_size=spec.image_size,
            patch_size=spec.patch_size,
            embed_dim=spec.width,
            depth=spec.layers,
            num_heads=spec.heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            norm_layer=_layer_norm,  # type: ignore[arg-type]  # timm annotates a class; it only calls it, as its own partials do
            act_layer=nn.GELU,
            use_abs_pos=True,
            use_rel_pos=True,
            window_size=spec.window_size,
            global_attn_indexes=tuple(spec.global_attn_indexes),
            neck_chans=spec.out_chans,
            global_pool="",
            num_classes=0,
        )
        self.first_global_index = min(spec.global_attn_indexes)
        self.resample_size = spec.resample_size
        channels = [spec.out_chans, *spec.downsample_channels]
        self.downsamples = nn.Sequential(
            *[
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False)
                for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
            ]
        )
        self.neck_hd = copy.deepcopy(self.neck)
        self.hd_alpha_downsamples = nn.Parameter(torch.zeros(1))

    def _resample_and_downsample(self, x: torch.Tensor) -> torch.Tensor:
        # Upstream resizes in float32 whatever the model dtype.
        size = (self.resample_size, self.resample_size)
        x = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False).to(x.dtype)
        return self.downsamples(x)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels)  # [B, g, g, width]
        x = x + self.pos_embed
        first_global = None
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index == self.first_global_index:
                first_global = x
        assert first_global is not None  # first_global_index is one of the blocks' indexes
        main = self._resample_and_downsample(self.neck(x.permute(0, 3, 1, 2)))
        high = self._resample_and_downsample(self.neck_hd(first_global.permute(0, 3, 1, 2)))
        return main + high * self.hd_alpha_downsamples  # [B, C_out, g', g']


class TowerBranch(nn.Module):
    """A backbone plus the per-tower pixel normalisation upstream applies."""

    def __init__(self, backbone: nn.Module, pixel_mean, pixel_std):
        super().__init__()
        self.vision_tower = backbone
        self.pixel_mean = pixel_mean
        self.pixel_std = pixel_std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision_tower(_normalize(pixels, self.pixel_mean, self.pixel_std))


class HybridTower(nn.Module):
    """The 7B tower: SAM at high resolution plus SigLIP on a resize of the same image."""

    def __init__(self, high: SamSpec, low: SiglipSpec):
        super().__init__()
        self.vision_tower_high = TowerBranch(DeepSeekSamViT(high), high.pixel_mean, high.pixel_std)
        self.vision_tower_low = TowerBranch(SiglipBackbone(low), low.pixel_mean, low.pixel_std)
        self.low_res_size = low.image_size

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        high = self.vision_tower_high(pixels).flatten(2).transpose(1, 2)  # [B, g*g, C]
        # torchvision's Resize (what upstream calls) computes in float32.
        size = (self.low_res_size, self.low_res_size)
        low_pixels = F.interpolate(
            pixels.float(), size=size, mode="bilinear", align_corners=False, antialias=True
        ).to(pixels.dtype)
        return high, self.vision_tower_low(low_pixels)


class MlpAligner(nn.Module):
    """Upstream's ``MlpProjector`` for a single tower: linear, then (GELU, linear) * (depth - 1)."""

    def __init__(self, spec: AlignerSpec):
        super().__init__()
        if spec.projector_type == "identity":
            self.layers: nn.Module = nn.Identity()
            return
        modules: list[nn.Module] = [nn.Linear(spec.input_dim, spec.n_embed)]
        depth = spec.depth if spec.projector_type == "mlp_gelu" else 1
        for _ in range(1, depth):
            modules += [nn.GELU(), nn.Linear(spec.n_embed, spec.n_embed)]
        self.layers = nn.Sequential(*modules) if spec.projector_type == "mlp_gelu" else modules[0]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class HybridSplitAligner(nn.Module):
    """``low_high_hybrid_split_mlp_gelu``: each branch to half width, concatenated, then the MLP tail."""

    def __init__(self, spec: AlignerSpec):
        super().__init__()
        self.high_up_proj = nn.Linear(spec.input_dim, spec.n_embed // 2)
        self.low_up_proj = nn.Linear(spec.input_dim, spec.n_embed // 2)
        modules: list[nn.Module] = []
        for _ in range(1, spec.depth):
            modules += [nn.GELU(), nn.Linear(spec.n_embed, spec.n_embed)]
        self.layers = nn.Sequential(*modules)

    def forward(self, features: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        high, low = features
        return self.layers(torch.cat([self.high_up_proj(high), self.low_up_proj(low)], dim=-1))


def build_vision(spec: VisionSpec) -> nn.Module:
    if spec.kind == "hybrid":
        assert spec.high is not None  # parse_spec gives every hybrid its SAM tower
        return HybridTower(spec.high, spec.low)
    return TowerBranch(SiglipBackbone(spec.low), spec.low.pixel_mean, spec.low.pixel_std)


def build_aligner(spec: AlignerSpec) -> nn.Module:
    if spec.projector_type == "low_high_hybrid_split_mlp_gelu":
        return HybridSplitAligner(spec)
    return MlpAligner(spec)
