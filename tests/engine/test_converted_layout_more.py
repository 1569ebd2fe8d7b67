"""More of transformers' converted layout: its config defaults, folders of neither layout, and --compile's decoding.

The helpers (a chat with pictures, transformers' own model, its inputs) are ``test_converted``'s.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_converted import GREEDY, _chat, _inputs, _picture, _transformers_model

import engine
from engine.errors import CheckpointError
from engine.testing.converted_checkpoints import write_converted_checkpoint


def _without_tie_key(folder):
    """The config as a hand-written or older one may be: no tie_word_embeddings anywhere
    (transformers' default: tied)."""
    config = json.loads((folder / "config.json").read_text())
    config.pop("tie_word_embeddings", None)
    config["text_config"].pop("tie_word_embeddings", None)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _assert_logits_match_transformers(folder):
    ours = engine.load(str(folder), device="cpu", dtype="float32")
    reference, hybrid = _transformers_model(folder)
    prepared = ours.prepare(_chat())
    with torch.inference_mode():
        want = reference(**_inputs(ours, prepared, hybrid)).logits[0].float()
    torch.testing.assert_close(ours.logits(prepared), want, atol=1e-4, rtol=1e-4)
    return ours, reference


def test_a_config_without_the_tie_key_keeps_a_head_stored_on_file(tmp_path):
    """transformers' DeepseekVLConfig defaults to a tied head, yet keeps an lm_head.weight the file holds
    (untied, as DeepSeek-VL's)."""
    folder = _without_tie_key(write_converted_checkpoint(tmp_path / "untied", seed=6, hidden_act="gelu"))
    ours, reference = _assert_logits_match_transformers(folder)
    lm = ours.model.language_model
    assert not torch.equal(lm.lm_head.weight, lm.model.embed_tokens.weight)
    assert torch.equal(lm.lm_head.weight, reference.lm_head.weight)
    assert ours.model.spec.language["tie_word_embeddings"] is False


def test_a_config_without_the_tie_key_and_no_head_on_file_ties_it(tmp_path):
    folder = _without_tie_key(write_converted_checkpoint(tmp_path / "tied", seed=7, tie=True, hidden_act="gelu"))
    ours, _ = _assert_logits_match_transformers(folder)
    lm = ours.model.language_model
    assert torch.equal(lm.lm_head.weight, lm.model.embed_tokens.weight)


# -- folders of neither layout: one line naming what was found --------------------------------------


def _one_line_error(folder) -> str:
    with pytest.raises(CheckpointError) as info:
        engine.load(str(folder), device="cpu")
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    return message


def test_a_llama_folder_is_named_as_what_it_is(tmp_path):
    llama = {"model_type": "llama", "hidden_size": 64, "architectures": ["LlamaForCausalLM"]}
    (tmp_path / "config.json").write_text(json.dumps(llama))
    message = _one_line_error(tmp_path)
    assert "model_type 'llama'" in message and "no *_config sections" in message
    assert "deepseek_vl" in message and "multi_modality" in message


def test_a_converted_config_relabelled_llama_names_its_sections(tmp_path):
    folder = write_converted_checkpoint(tmp_path / "relabelled", seed=8)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(config))
    message = _one_line_error(folder)
    assert "model_type 'llama'" in message and "text_config, vision_config" in message


def test_a_hybrid_config_without_its_sam_section_names_what_it_has(tmp_path):
    folder = write_converted_checkpoint(tmp_path / "hybrid", tower="hybrid", seed=9)
    config = json.loads((folder / "config.json").read_text())
    del config["high_res_vision_config"]
    config["bad\nkey_config"] = {}  # shown only where printable
    (folder / "config.json").write_text(json.dumps(config))
    message = _one_line_error(folder)
    assert ("model_type 'deepseek_vl_hybrid' but no valid 'high_res_vision_config' section"
            " (it has text_config, vision_config)") in message


# -- --compile: the static KV cache and torch.compile'd step, as test_engine_static_decode.py runs them on the CPU --


@pytest.mark.parametrize("tower", ["siglip", "hybrid"])
def test_compiled_decoding_on_a_converted_checkpoint_gives_the_eager_tokens(tower, tmp_path):
    """The decode step traced by torch.compile (aot_eager: the same capture as on CUDA, without kernels) over a
    chat with pictures and prefix reuse: the same greedy tokens as the growing-cache engine."""
    folder = write_converted_checkpoint(tmp_path / tower, tower=tower, seed=10)
    compiled, eager = engine.load(str(folder)), engine.load(str(folder))
    assert compiled.use_static_decode(compile_options={"backend": "aot_eager", "fullgraph": True}) is None
    assert compiled.info.compiled and compiled.info.layout == "transformers"
    history: list[engine.Message] = []
    for number, (question, seed) in enumerate([("Look at this.", 1), ("And now?", None), ("A second one?", 2)]):
        history.append(engine.Message("user", question, images=[_picture(seed)] if seed else []))
        got, want = compiled.stream(history, GREEDY, cache_key="pane"), eager.stream(history, GREEDY, cache_key="pane")
        text = "".join(got)
        "".join(want)
        assert got.token_ids == want.token_ids and got.stats.new_tokens > 0
        if number:
            assert got.stats.reused_tokens > 0
        history.append(engine.Message("assistant", text))
    assert compiled.info.compiled  # no step fell back to eager decoding


def test_load_with_compile_takes_a_converted_checkpoint(tmp_path, monkeypatch):
    """``engine.load(compile=True)`` as on a capable GPU (the decision faked, the CUDA options swapped for
    the CPU's)."""
    import engine.static_decode as static_decode

    folder = write_converted_checkpoint(tmp_path / "siglip", seed=11)
    monkeypatch.setattr(static_decode, "compile_unsupported", lambda device, cache_bytes=0: None)
    monkeypatch.setattr(static_decode, "CUDA_COMPILE_OPTIONS", {"backend": "aot_eager", "fullgraph": True})
    eng = engine.load(str(folder), compile=True, context_length=128)
    assert eng.info.compiled and eng.info.compile_note is None and eng._static is not None
    history = [engine.Message("user", "Hello?", images=[_picture(3)])]
    got = eng.stream(history, GREEDY)
    "".join(got)
    want = engine.load(str(folder), context_length=128).stream(history, GREEDY)
    "".join(want)
    assert got.token_ids == want.token_ids


