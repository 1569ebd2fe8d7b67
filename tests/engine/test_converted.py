"""Checkpoints in transformers' converted layout (deepseek-community/*) load into the same engine.

Two kinds of converted folders: written by transformers' own classes with
random weights (``engine.testing.converted_checkpoints``), and the project's original
fixtures renamed by transformers' conversion rules (``hf_reference``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from hf_reference import write_converted_from_original
from PIL import Image

import engine
from engine.errors import CheckpointError
from engine.testing.converted_checkpoints import write_converted_checkpoint

GREEDY = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=12)


def _picture(seed: int, size=(71, 45)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _chat() -> list[engine.Message]:
    return [
        engine.Message("user", "Describe this image in detail.", images=[_picture(1)]),
        engine.Message("assistant", "The image shows a dog on a green field."),
        engine.Message("user", "What is in the picture? Compare them.", images=[_picture(2, (30, 90))]),
    ]


@pytest.fixture(scope="module", params=["siglip", "hybrid"])
def native(request, tmp_path_factory):
    """A converted folder written by transformers' classes, and the engine on it."""
    folder = write_converted_checkpoint(tmp_path_factory.mktemp(f"converted-{request.param}"), tower=request.param,
                                        seed=3)
    return folder, engine.load(str(folder), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def from_original(tiny_checkpoints, tmp_path_factory):
    """{tower: (original folder, its conversion)}."""
    return {
        tower: (folder, write_converted_from_original(folder, tmp_path_factory.mktemp(f"from-original-{tower}")))
        for tower, folder in tiny_checkpoints.items()
    }


def _transformers_model(folder):
    from transformers import AutoConfig, DeepseekVLForConditionalGeneration, DeepseekVLHybridForConditionalGeneration

    hybrid = AutoConfig.from_pretrained(str(folder)).model_type == "deepseek_vl_hybrid"
    model_class = DeepseekVLHybridForConditionalGeneration if hybrid else DeepseekVLForConditionalGeneration
    return model_class.from_pretrained(str(folder), dtype=torch.float32).eval(), hybrid


def _inputs(ours, prepared, hybrid: bool) -> dict:
    """The engine's ids and pixels, as transformers' model takes them (its hybrid takes the low-resolution picture
    apart)."""
    kwargs = {"input_ids": prepared.input_ids[None]}
    pixels = torch.stack(prepared.images)
    if hybrid:
        spec = ours.model.spec.vision
        low = T.Resize(spec.low.image_size, antialias=True)(pixels)
        kwargs["pixel_values"] = T.Normalize(spec.low.pixel_mean, spec.low.pixel_std)(low)
        kwargs["high_res_pixel_values"] = T.Normalize(spec.high.pixel_mean, spec.high.pixel_std)(pixels)
    else:
        kwargs["pixel_values"] = pixels
    return kwargs


def test_layout_is_detected_and_the_model_is_the_same_code(native):
    folder, ours = native
    spec = ours.model.spec
    assert spec.layout == "converted"
    assert spec.num_image_tokens == 16 and spec.image_tag == "<image_placeholder>"
    assert type(ours.model).__name__ == "DeepSeekVLModel"


# The engine's SigLIP runs exact GELU, as upstream's timm tower (the trained model) does; transformers'
# SigLIP config defaults to gelu_pytorch_tanh, which the native fixture keeps. That approximation is all
# that separates the two: measured max |diff| 8.8e-4 (siglip) and 8.5e-4 (hybrid) on logits up to 4.4,
# cosine > 0.9999997; with hidden_act "gelu" (the conversion of an original, below) the difference is 0.
MAX_ABS, MIN_COSINE = 5e-3, 0.99999


def test_logits_match_transformers_on_its_own_checkpoint(native):
    folder, ours = native
    reference, hybrid = _transformers_model(folder)
    prepared = ours.prepare(_chat())
    got = ours.logits(prepared)
    with torch.inference_mode():
        want = reference(**_inputs(ours, prepared, hybrid)).logits[0].float()
    assert got.shape == want.shape
    diff = (got - want).abs().max().item()
    cosine = torch.nn.functional.cosine_similarity(got, want, dim=-1).min().item()
    assert diff <= MAX_ABS and cosine >= MIN_COSINE, (diff, cosine)


@pytest.mark.parametrize("tower", ["siglip", "hybrid"])
def test_logits_match_transformers_on_a_converted_original(from_original, tower):
    """Exact GELU in the config (as the original tower): transformers and the engine agree to float32 rounding."""
    _, converted = from_original[tower]
    ours = engine.load(str(converted), device="cpu", dtype="float32")
    reference, hybrid = _transformers_model(converted)
    prepared = ours.prepare(_chat())
    with torch.inference_mode():
        want = reference(**_inputs(ours, prepared, hybrid)).logits[0].float()
    torch.testing.assert_close(ours.logits(prepared), want, atol=1e-4, rtol=1e-4)


def test_greedy_tokens_match_transformers_generate(native):
    folder, ours = native
    reference, hybrid = _transformers_model(folder)
    history = _chat()
    answer = ours.stream(history, GREEDY)
    "".join(answer)
    prepared = ours.prepare(history)
    with torch.inference_mode():
        out = reference.generate(**_inputs(ours, prepared, hybrid), max_new_tokens=len(answer.token_ids),
                                 do_sample=False, eos_token_id=ours.prompt_format.eos_id,
                                 pad_token_id=ours.prompt_format.eos_id)
    assert answer.token_ids == out[0, len(prepared.input_ids):].tolist()


def test_a_tied_head_is_read_from_the_embeddings(tmp_path):
    """transformers stores a tied head once (no lm_head.weight on file): the engine's head is the embedding matrix."""
    from safetensors import safe_open

    folder = write_converted_checkpoint(tmp_path / "tied", seed=5, tie=True, hidden_act="gelu")
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        assert "lm_head.weight" not in handle.keys()
    ours = engine.load(str(folder), device="cpu", dtype="float32")
    lm = ours.model.language_model
    assert torch.equal(lm.lm_head.weight, lm.model.embed_tokens.weight)
    reference, hybrid = _transformers_model(folder)
    prepared = ours.prepare(_chat())
    with torch.inference_mode():
        want = reference(**_inputs(ours, prepared, hybrid)).logits[0].float()
    torch.testing.assert_close(ours.logits(prepared), want, atol=1e-4, rtol=1e-4)


def test_the_engines_pixels_equal_the_repository_processor(native):
    """Preprocessing parameters come from the repository's processor config (a picture needing no resize)."""
    from transformers import AutoProcessor

    folder, ours = native
    processor = AutoProcessor.from_pretrained(str(folder))
    spec = ours.model.spec.vision
    side = spec.image_size
    picture = _picture(7, (side, side))
    mine = ours.prepare([engine.Message("user", "x", images=[picture])]).images[0]
    theirs = processor.image_processor(picture, return_tensors="pt")
    if spec.kind == "hybrid":
        high = T.Normalize(spec.high.pixel_mean, spec.high.pixel_std)(mine[None])[0]
        torch.testing.assert_close(high, theirs["high_res_pixel_values"][0], atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(mine, theirs["pixel_values"][0], atol=1e-5, rtol=0)


def test_the_repository_chat_template_renders_the_engines_prompt(native):
    """tokenizer.apply_chat_template with the repository's own template gives the engine's prompt, text and ids."""
    from transformers import AutoTokenizer

    folder, ours = native
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    fmt = ours.prompt_format
    chats = [
        [engine.Message("user", "  Hello there, what can you do? ")],
        _chat(),
        [*_chat(), engine.Message("assistant", "Two noisy pictures."), engine.Message("user", "Thanks!")],
    ]
    for chat in chats:
        messages = [
            {"role": m.role, "content": [*({"type": "image"} for _ in m.images), {"type": "text", "text": m.text}]}
            for m in chat
        ]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        pieces = fmt.pieces(chat, None)
        assert rendered == fmt.render(pieces)
        ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        expanded = [i for token in ids for i in ([token] * fmt.num_image_tokens if token == fmt.image_id else [token])]
        assert [fmt.bos_id, *expanded] == fmt.encode(pieces)


@pytest.mark.parametrize("tower", ["siglip", "hybrid"])
def test_an_original_checkpoint_and_its_conversion_give_identical_logits(from_original, tower):
    original, converted = from_original[tower]
    a = engine.load(str(original), device="cpu", dtype="float32")
    b = engine.load(str(converted), device="cpu", dtype="float32")
    assert (a.model.spec.layout, b.model.spec.layout) == ("original", "converted")
    named = {"model_name": "converted"}  # the converted config names no timm preset
    vision = a.model.spec.vision
    vision = dataclasses.replace(vision, low=dataclasses.replace(vision.low, **named),
                                 high=vision.high and dataclasses.replace(vision.high, **named))
    assert vision == b.model.spec.vision and a.model.spec.aligner == b.model.spec.aligner
    assert a.model.spec.num_image_tokens == b.model.spec.num_image_tokens
    prepared_a, prepared_b = a.prepare(_chat()), b.prepare(_chat())
    assert torch.equal(prepared_a.input_ids, prepared_b.input_ids)
    assert torch.equal(a.logits(prepared_a), b.logits(prepared_b))


def test_prefix_reuse_and_int8_on_a_converted_checkpoint(from_original):
    _, converted = from_original["siglip"]
    fast = engine.load(str(converted), device="cpu", quantize="int8", prefix_cache=True)
    plain = engine.load(str(converted), device="cpu", quantize="int8", prefix_cache=False)
    assert fast.info.quantize == "int8" and fast.info.quantize_note is None
    history: list[engine.Message] = []
    for number, (question, images) in enumerate([("Look at this.", [_picture(1)]), ("And now?", []),
                                                 ("Another.", [_picture(2)])]):
        history.append(engine.Message("user", question, images=images))
        a, b = fast.stream(history, GREEDY, cache_key="pane"), plain.stream(history, GREEDY, cache_key="pane")
        a_text, b_text = "".join(a), "".join(b)
        assert a.token_ids == b.token_ids and a_text == b_text
        if number:
            assert a.stats.reused_tokens > a.stats.prompt_tokens // 2
        history.append(engine.Message("assistant", a_text))
    assert fast.vision_calls == 2


# -- refusals --------------------------------------------------------------------------------------


@pytest.fixture
def converted_copy(from_original, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(from_original["siglip"][1], folder)
    return folder


def _edit_config(folder, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("section, key, value, named", [
    ("text_config", "num_hidden_layers", 200000, "text_config num_hidden_layers"),
    ("vision_config", "hidden_size", 10 ** 9, "vision_config hidden_size"),
    ("vision_config", "num_hidden_layers", float("nan"), "vision_config num_hidden_layers"),
    ("vision_config", "image_size", "big", "vision_config image_size"),
    ("text_config", "hidden_size", 1 << 30, "text_config hidden_size"),
])
def test_crafted_sizes_are_refused_in_one_line_before_anything_is_built(converted_copy, section, key, value, named):
    _edit_config(converted_copy, lambda c: c[section].__setitem__(key, value))
    with pytest.raises(CheckpointError) as info:
        engine.load(str(converted_copy), device="cpu")
    message = str(info.value)
    assert "\n" not in message and named in message, message


def test_config_that_disagrees_with_the_weights_is_refused(converted_copy):
    _edit_config(converted_copy, lambda c: c["vision_config"].__setitem__("num_hidden_layers", 3))
    with pytest.raises(CheckpointError, match="configures 3 vision tower layers but the weights hold 2"):
        engine.load(str(converted_copy), device="cpu")


def test_a_wrong_q_projection_shape_is_named_as_on_disk(converted_copy):
    from safetensors.torch import load_file, save_file

    weights = load_file(str(converted_copy / "model.safetensors"))
    name = "model.vision_model.encoder.layers.0.self_attn.q_proj.weight"
    assert name in weights
    weights[name] = torch.zeros(weights[name].shape[0], weights[name].shape[1] + 1)
    save_file(weights, str(converted_copy / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="q/k/v projections differ in shape"):
        engine.load(str(converted_copy), device="cpu")


def test_a_missing_projection_is_refused_before_anything_is_read(converted_copy):
    from safetensors.torch import load_file, save_file

    weights = load_file(str(converted_copy / "model.safetensors"))
    del weights["model.vision_model.encoder.layers.1.self_attn.v_proj.bias"]
    save_file(weights, str(converted_copy / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as info:
        engine.load(str(converted_copy), device="cpu")
    message = str(info.value)
    assert ("lacks weights the model needs: vision_model.vision_tower.blocks.1.attn.qkv.bias "
            "(named as in the original layout)") in message


def test_a_folder_of_neither_layout_gets_one_line_naming_what_was_found(converted_copy):
    _edit_config(converted_copy, lambda c: c.__setitem__("model_type", "llava"))
    with pytest.raises(CheckpointError) as info:
        engine.load(str(converted_copy), device="cpu")
    message = str(info.value)
    assert "\n" not in message and "'llava'" in message and "text_config" in message and "deepseek_vl" in message


def test_crafted_processor_and_sam_sizes_are_refused_in_one_line(from_original, tmp_path):
    hybrid = tmp_path / "hybrid"
    shutil.copytree(from_original["hybrid"][1], hybrid)
    _edit_config(hybrid, lambda c: c["high_res_vision_config"].__setitem__("num_hidden_layers", 10 ** 6))
    with pytest.raises(CheckpointError,
                       match=r"high_res_vision_config num_hidden_layers is 1,000,000, outside 1\.\.256"):
        engine.load(str(hybrid), device="cpu")

    siglip = tmp_path / "siglip"
    shutil.copytree(from_original["siglip"][1], siglip)
    processor = json.loads((siglip / "processor_config.json").read_text())
    processor["image_processor"]["size"] = {"height": 10 ** 6, "width": 10 ** 6}
    processor["num_image_tokens"] = 10 ** 7
    (siglip / "processor_config.json").write_text(json.dumps(processor))
    with pytest.raises(CheckpointError) as info:
        engine.load(str(siglip), device="cpu")
    assert "image processor size is 1,000,000, outside 1..4,096" in str(info.value) and "\n" not in str(info.value)
