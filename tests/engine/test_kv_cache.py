"""The reserved-buffer KV cache (``engine.caches.kv``) holds exactly what transformers' own growing cache holds."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

import engine
from engine.caches.kv import ReservedLayer, new_cache
from engine.decode import CacheSteps


def _states(length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn((1, 2, length, 4), generator=generator) for _ in range(2))


def test_a_layer_matches_concatenation_across_chunks_and_crops(monkeypatch):
    monkeypatch.setattr(ReservedLayer, "CHUNK", 8)
    layer, expected_keys, expected_values = ReservedLayer(), [], []
    for step, length in enumerate([5, 1, 1, 1, 3, 9, 1]):  # a prefill, tokens, a prefill crossing two chunks
        keys, values = _states(length, step)
        got_keys, got_values = layer.update(keys, values)
        expected_keys.append(keys)
        expected_values.append(values)
        assert torch.equal(got_keys, torch.cat(expected_keys, dim=-2))
        assert torch.equal(got_values, torch.cat(expected_values, dim=-2))
    assert layer.get_seq_length() == 21 and layer._reserved[0].shape[-2] == 24  # reserved in chunks of 8
    layer.crop(-6)  # prefix reuse: keep the first 15 positions
    keys, values = _states(2, 99)
    got_keys, _ = layer.update(keys, values)
    assert torch.equal(got_keys, torch.cat([torch.cat(expected_keys, dim=-2)[..., :15, :], keys], dim=-2))


@pytest.fixture(scope="module")
def model(tiny_siglip):
    return engine.load(str(tiny_siglip)).model


def test_greedy_decoding_matches_transformers_own_cache(model, monkeypatch):
    monkeypatch.setattr(ReservedLayer, "CHUNK", 16)
    embed = model.language_model.get_input_embeddings()
    prompt = embed(torch.arange(5, 25)[None])

    def greedy(cache) -> list[int]:
        steps, tokens = CacheSteps(model, cache), []
        with torch.inference_mode():
            logits = steps.prefill(prompt)
            for _ in range(40):  # 20 + 40 positions: crosses three chunk boundaries
                tokens.append(int(logits.argmax()))
                logits = steps.next(tokens[-1])
        return tokens

    reserved = new_cache(model)
    assert all(isinstance(layer, ReservedLayer) for layer in reserved.layers)
    assert len(reserved.layers) == model.language_model.config.num_hidden_layers
    assert greedy(reserved) == greedy(DynamicCache(config=model.language_model.config))
    assert reserved.get_seq_length() == 20 + 40
