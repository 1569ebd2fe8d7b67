"""The engine's logits equal transformers' own DeepSeek-VL implementations.

The same random weights, written in the original layout, are loaded by the
engine and, after transformers' key renames, into ``DeepseekVLForConditionalGeneration``
(SigLIP tower) and ``DeepseekVLHybridForConditionalGeneration`` (SAM + SigLIP).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from hf_reference import load_reference
from PIL import Image

import engine


def _picture(seed: int, size=(71, 45)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


CONVERSATIONS = {
    "text only": [engine.Message("user", "Hello there, what can you do?")],
    "two images": [engine.Message("user", "Compare these two.", images=[_picture(1), _picture(2, (30, 90))])],
    "multi-turn with images": [
        engine.Message("user", "What is this?", images=[_picture(3)]),
        engine.Message("assistant", "It is a noisy picture."),
        engine.Message("user", "And this one?", images=[_picture(4, (64, 64))]),
    ],
}


@pytest.fixture(scope="module", params=["siglip", "hybrid"])
def pair(request, tiny_checkpoints):
    folder = tiny_checkpoints[request.param]
    ours = engine.load(str(folder), device="cpu", dtype="float32")
    reference, hybrid = load_reference(folder, ours.prompt_format.image_id)
    return ours, reference, hybrid


def _reference_logits(reference, hybrid: bool, ours, prepared) -> torch.Tensor:
    kwargs = {"input_ids": prepared.input_ids[None]}
    if prepared.images:
        pixels = torch.stack(prepared.images)
        if hybrid:
            spec = ours.model.spec.vision
            # Built independently of the engine: torchvision's Resize (what upstream calls) and Normalize.
            low = T.Resize(spec.low.image_size, antialias=True)(pixels)
            kwargs["pixel_values"] = T.Normalize(spec.low.pixel_mean, spec.low.pixel_std)(low)
            kwargs["high_res_pixel_values"] = T.Normalize(spec.high.pixel_mean, spec.high.pixel_std)(pixels)
        else:
            kwargs["pixel_values"] = pixels
    with torch.inference_mode():
        return reference(**kwargs).logits[0].float()


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_logits_match_transformers(pair, name):
    ours, reference, hybrid = pair
    prepared = ours.prepare(CONVERSATIONS[name])
    got = ours.logits(prepared)
    want = _reference_logits(reference, hybrid, ours, prepared)
    assert got.shape == want.shape == (len(prepared.input_ids), ours.model.spec.language["vocab_size"])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_images_change_the_logits(pair):
    """Guards the parity test against a path where images are silently ignored."""
    ours, _, _ = pair
    a = ours.logits(ours.prepare([engine.Message("user", "Look.", images=[_picture(10)])]))
    b = ours.logits(ours.prepare([engine.Message("user", "Look.", images=[_picture(11)])]))
    assert a.shape == b.shape
    assert (a[-1] - b[-1]).abs().max() > 1e-3


def test_hybrid_high_resolution_branch_matters(tiny_hybrid):
    ours = engine.load(str(tiny_hybrid))
    tower = ours.model.vision_model.vision_tower_high.vision_tower
    pixels = torch.stack(ours.prepare([engine.Message("user", "x", images=[_picture(5)])]).images)
    with_hd = tower(pixels)
    saved = tower.hd_alpha_downsamples.data.clone()
    try:
        tower.hd_alpha_downsamples.data.zero_()
        without_hd = tower(pixels)
    finally:
        tower.hd_alpha_downsamples.data.copy_(saved)
    assert (with_hd - without_hd).abs().max() > 1e-4
