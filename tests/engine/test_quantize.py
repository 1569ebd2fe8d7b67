"""Weight-only quantization (``load(quantize=...)``): close logits, same greedy answers with prefix reuse, fallbacks.

Random weights give flat logits, so top-1 agreement is asked only where the
unquantized top-1 wins by a clear margin; everywhere, the logits' cosine
similarity is bounded. Bounds (tiny checkpoints, a 3-message chat with two
pictures, every prompt position; measured: int8 cosine >= 0.9997, int4 mean
0.986 and min 0.96, int4 agreement 0.94-1.0 where the margin passes 0.5):

- int8: cosine >= 0.999 at every position; the same top-1 wherever the margin is over 0.1.
- int4: mean cosine >= 0.98, min >= 0.94; the same top-1 at >= 90% of the positions whose margin is over 0.5.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import engine
from engine import quantize as qz
from engine.types import parse_quantize

GREEDY = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=10, ignore_eos=True)
# mode: (min cosine, mean cosine, margin counted as clear, top-1 agreement at clear margins)
BOUNDS = {"int8": (0.999, 0.9995, 0.1, 1.0), "int4": (0.94, 0.98, 0.5, 0.9)}


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))


def _chat() -> list[engine.Message]:
    return [
        engine.Message("user", "Look at this.", images=[_picture(1)]),
        engine.Message("assistant", "A dog on a green field."),
        engine.Message("user", "Another one. Compare them.", images=[_picture(2)]),
    ]


@pytest.fixture(scope="module", params=["siglip", "hybrid"])
def reference(request, tiny_checkpoints):
    """(checkpoint folder, the unquantized engine's float32 logits over the chat)."""
    folder = tiny_checkpoints[request.param]
    plain = engine.load(str(folder), device="cpu")
    assert plain.info.quantize == "none" and plain.info.quantize_note is None
    return folder, plain.logits(plain.prepare(_chat())), plain.info.parameters


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_logits_stay_close(reference, mode):
    folder, base, parameters = reference
    eng = engine.load(str(folder), device="cpu", quantize=mode)
    assert eng.info.quantize == mode and eng.info.quantize_note is None
    assert eng.info.parameters == parameters  # quantized weights still count
    layer = qz.Int8Linear if mode == "int8" else qz.Int4Linear
    lm = eng.model.language_model
    quantized = [name for name, m in eng.model.named_modules() if isinstance(m, layer)]
    assert len(quantized) == 7 * lm.config.num_hidden_layers + 1  # q, k, v, o, gate, up, down per layer; the head
    assert isinstance(lm.lm_head, layer)
    # The vision towers, the aligner and the embeddings keep the load dtype.
    assert not any(name.startswith(("vision_model", "aligner")) for name in quantized)
    kept = [*eng.model.vision_model.parameters(), *eng.model.aligner.parameters()]
    assert all(p.dtype == torch.float32 for p in kept)
    assert eng.model.dtype == torch.float32

    logits = eng.logits(eng.prepare(_chat()))
    min_cos, mean_cos, clear, agreement = BOUNDS[mode]
    cosine = torch.nn.functional.cosine_similarity(logits, base, dim=-1)
    assert cosine.min() >= min_cos and cosine.mean() >= mean_cos, (cosine.min(), cosine.mean())
    top2 = base.topk(2, dim=-1).values
    clear_positions = (top2[:, 0] - top2[:, 1]) > clear
    assert clear_positions.sum() >= 20  # enough positions to say something
    agree = (logits.argmax(-1) == base.argmax(-1))[clear_positions].float().mean()
    assert agree >= agreement, agree


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_greedy_answers_identical_with_and_without_prefix_reuse(tiny_siglip, mode):
    fast = engine.load(str(tiny_siglip), device="cpu", quantize=mode, prefix_cache=True)
    plain = engine.load(str(tiny_siglip), device="cpu", quantize=mode, prefix_cache=False)
    history: list[engine.Message] = []
    for number, (question, images) in enumerate([("Look at this.", [_picture(1)]), ("And now?", []),
                                                 ("Another one.", [_picture(2)])]):
        history.append(engine.Message("user", question, images=images))
        a, b = fast.stream(history, GREEDY, cache_key="pane"), plain.stream(history, GREEDY, cache_key="pane")
        a_text, b_text = "".join(a), "".join(b)
        assert a.token_ids == b.token_ids and a_text == b_text
        if number:
            assert a.stats.reused_tokens > a.stats.prompt_tokens // 2 and b.stats.reused_tokens == 0
        history.append(engine.Message("assistant", a_text))
    assert fast.vision_calls == 2  # each picture through the vision tower once: the feature cache holds too


def test_cancel_under_quantization_stops_within_a_token_and_the_next_answer_is_whole(tiny_siglip):
    import threading

    eng = engine.load(str(tiny_siglip), device="cpu", quantize="int8")
    long = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=200, ignore_eos=True)
    cancel = threading.Event()
    stream = eng.stream([engine.Message("user", "Tell me a long story.")], long, cancel=cancel, cache_key="c")
    for _ in stream:
        cancel.set()  # after the first chunk
    assert stream.stats.stop_reason == "cancelled" and stream.stats.new_tokens <= 10
    again = eng.stream([engine.Message("user", "Tell me a long story.")], GREEDY, cache_key="c")
    text = "".join(again)
    assert text and len(again.token_ids) == GREEDY.max_new_tokens and again.stats.stop_reason == "length"


def test_bad_mode_is_one_line_value_error(tiny_siglip):
    with pytest.raises(ValueError, match=r"quantize must be one of none, int8, int4, not 'int3'"):
        engine.load(str(tiny_siglip), quantize="int3")
    assert parse_quantize(" INT8 ") == "int8" and parse_quantize(None) == "none"


def test_missing_torchao_falls_back_with_a_note(tiny_siglip, monkeypatch):
    # A device whose kernels come from torchao, on a build without torchao.
    monkeypatch.setitem(qz.KERNELS, "cpu", {"int8": ("torchao",), "int4": ("torchao",)})
    for name in [m for m in sys.modules if m == "torchao" or m.startswith("torchao.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao -> ImportError
    messages: list[str] = []
    eng = engine.load(str(tiny_siglip), device="cpu", quantize="int8", progress=lambda p: messages.append(p.message))
    assert eng.info.quantize == "none"
    assert eng.info.quantize_note == "int8 on cpu needs torchao, which is not installed; loading unquantized"
    assert not any(isinstance(m, qz.Int8Linear) for m in eng.model.modules())
    assert "quantize: int8 on cpu needs torchao" in messages[-1]
    assert "".join(eng.stream([engine.Message("user", "hi")], GREEDY))  # still answers


def test_device_without_kernel_or_failing_probe_falls_back():
    meta = qz.plan("int4", torch.device("meta"), torch.float32)
    assert (meta.mode, meta.note) == ("none", "int4 weights have no kernel on meta here; loading unquantized")
    assert qz.plan("none", torch.device("cpu"), torch.float32).note is None


def test_failing_kernel_probe_falls_back(monkeypatch):
    def broken(layer, mode, kernel):
        raise RuntimeError("no kernel for this build\nsecond line")

    monkeypatch.setattr(qz, "quantize_linear", broken)
    plan = qz.plan("int8", torch.device("cpu"), torch.float32)
    assert plan.mode == "none"
    assert plan.note == ("int8 cannot run on cpu here (RuntimeError: no kernel for this build second line); "
                         "loading unquantized")


def test_a_kernel_that_cannot_run_gives_way_to_the_next_one_without_a_note(monkeypatch):
    monkeypatch.setitem(qz.KERNELS, "cpu", {"int8": ("torchao", "aten-cpu")})
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao -> ImportError
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    plan = qz.plan("int8", torch.device("cpu"), torch.float32)
    assert (plan.mode, plan.kernel, plan.note) == ("int8", "aten-cpu", None)


def test_layers_int4_cannot_take_stay_in_load_dtype_with_a_note():
    quantizer = qz.LayerQuantizer(qz.plan("int4", torch.device("cpu"), torch.float32))
    holder = nn.Module()
    holder.language_model = nn.Module()
    holder.language_model.lm_head = nn.Linear(48, 16, bias=False)  # 48 inputs: no group size divides it
    holder.language_model.model = nn.Module()
    holder.language_model.model.layers = nn.ModuleList([nn.Module()])
    holder.language_model.model.layers[0].mlp = nn.Module()
    holder.language_model.model.layers[0].mlp.up_proj = nn.Linear(64, 24, bias=False)  # 24 outputs: packed in 16s
    holder.language_model.model.layers[0].mlp.down_proj = nn.Linear(64, 32, bias=False)
    for name in ("lm_head", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"):
        quantizer.assigned(holder, f"language_model.{name}.weight")
    assert isinstance(holder.language_model.lm_head, nn.Linear)
    assert isinstance(holder.language_model.model.layers[0].mlp.up_proj, nn.Linear)
    assert isinstance(holder.language_model.model.layers[0].mlp.down_proj, qz.Int4Linear)
    assert quantizer.note() == ("2 of 3 language-model layers stay unquantized "
                                "(the int4 kernel does not take their shape)")


def test_tied_head_and_non_targets_are_not_quantized():
    quantizer = qz.LayerQuantizer(qz.plan("int8", torch.device("cpu"), torch.float32), tied_head=True)
    assert not quantizer.is_target("language_model.lm_head")
    assert quantizer.is_target("language_model.model.layers.3.mlp.down_proj")
    assert not quantizer.is_target("aligner.layers.0")
    assert not quantizer.is_target("vision_model.vision_tower.blocks.0.mlp.fc1")


@pytest.mark.parametrize(("mode", "kernel"), [("int8", "aten-cpu"), ("int4", "aten-cpu")])
def test_quantized_layer_matches_float_layer_with_bias_and_batch(mode, kernel, monkeypatch):
    torch.manual_seed(0)
    layer = nn.Linear(256, 96)
    chunks = qz._row_chunks
    monkeypatch.setattr(qz, "_row_chunks", lambda rows: chunks(rows, 64))  # quantized in two chunks of rows
    quantized = qz.quantize_linear(layer, mode, kernel)
    assert quantized is not None
    x = torch.randn(2, 3, 256)
    out = quantized(x)
    assert out.shape == (2, 3, 96) and out.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(out.flatten(), layer(x).flatten(), dim=0)
    assert cosine > (0.999 if mode == "int8" else 0.99)


def test_int8_reads_a_quarter_of_the_float_weights(tiny_siglip):
    plain = engine.load(str(tiny_siglip), device="cpu")
    int8 = engine.load(str(tiny_siglip), device="cpu", quantize="int8")
    int4 = engine.load(str(tiny_siglip), device="cpu", quantize="int4")
    sizes = [qz.decode_weight_bytes(e.model.language_model, e.model.language_model.model.embed_tokens)
             for e in (plain, int8, int4)]
    # Linear weights: 4 bytes -> 1 (+ a bf16 scale per row) -> 1/2 (+ bf16 scale and zero per group); norms stay float.
    assert sizes[0] / 4.6 < sizes[1] < sizes[0] / 3 and sizes[2] < sizes[1] * 0.75


@pytest.mark.slow
def test_torchao_int8_path_loads_and_stays_close(reference, monkeypatch):
    """CUDA's kernel choice (torchao's weight-only int8), run on the CPU where it works, slowly: the same plumbing."""
    pytest.importorskip("torchao")
    folder, base, parameters = reference
    monkeypatch.setitem(qz.KERNELS, "cpu", {"int8": ("torchao",)})
    eng = engine.load(str(folder), device="cpu", quantize="int8")
    assert eng.info.quantize == "int8" and eng.info.quantize_note is None and eng.info.parameters == parameters
    head = eng.model.language_model.lm_head
    assert isinstance(head, nn.Linear) and type(head.weight).__module__.startswith("torchao")  # its int8 tensor
    cosine = torch.nn.functional.cosine_similarity(eng.logits(eng.prepare(_chat())), base, dim=-1)
    assert cosine.min() >= 0.999


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_loading_never_holds_more_than_one_unquantized_layer(tiny_hybrid, monkeypatch, mode):
    """Layer by layer as weights arrive: after each tensor, every target layer with its float weight in is quantized."""
    seen: list[int] = []
    assigned = qz.LayerQuantizer.assigned

    def checked(self, model, name):
        assigned(self, model, name)
        float_layers = [n for n, m in model.named_modules()
                        if self.is_target(n) and isinstance(m, nn.Linear) and not m.weight.is_meta]
        seen.append(len(float_layers))

    monkeypatch.setattr(qz.LayerQuantizer, "assigned", checked)
    eng = engine.load(str(tiny_hybrid), device="cpu", quantize=mode)
    assert eng.info.quantize == mode and len(seen) > 50
    assert max(seen) == 0  # each was quantized in the call that brought its weight
