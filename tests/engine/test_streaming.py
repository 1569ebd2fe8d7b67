"""Streaming generation through the real engine on tiny checkpoints.

Some tests give the tiny model hand-set weights that make greedy decoding
follow a chosen chain of tokens (each token's successor is fixed), so the
loader, prefill, KV cache, detokenizer and stop logic run for real on a
known output.
"""

from __future__ import annotations

import threading

import pytest
import torch

import engine
from engine.types import Prepared

GREEDY = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=24)


@pytest.fixture
def folder(tiny_siglip):
    return tiny_siglip


@pytest.fixture
def eng(folder):
    return engine.load(str(folder))


def script(eng, start: int, chain: list[int]) -> None:
    """Make greedy decoding go ``start -> chain[0] -> chain[1] -> ...`` (each token a unique successor)."""
    lm = eng.model.language_model
    with torch.no_grad():
        for layer in lm.model.layers:  # no attention or MLP output: the residual is the token's embedding
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        lm.model.norm.weight.fill_(1.0)
        embed, head = lm.model.embed_tokens.weight, lm.lm_head.weight
        head.zero_()
        sources = [start] + chain[:-1]
        assert len(set(sources)) == len(sources), "each token needs a single successor"
        for axis, (source, target) in enumerate(zip(sources, chain, strict=False)):
            embed[source].zero_()
            embed[source, axis] = 1.0
            head[target, axis] = 50.0


def _open_turn_last_token(eng) -> int:
    return int(eng.prepare([engine.Message("user", "hi")]).input_ids[-1])


def _ids(eng, text: str) -> list[int]:
    return eng.prompt_format.text_tokenizer.encode(text, add_special_tokens=False).ids


def test_greedy_equals_argmax_of_logits_step_by_step(eng):
    messages = [engine.Message("user", "Tell me a story.")]
    stream = eng.stream(messages, GREEDY)
    text = "".join(stream)
    assert stream.stats.new_tokens == len(stream.token_ids) > 5
    prepared = eng.prepare(messages)
    ids = prepared.input_ids
    for token in stream.token_ids:
        logits = eng.logits(Prepared(ids, prepared.images, prepared.image_keys, prepared.prompt))
        assert int(logits[-1].argmax()) == token
        ids = torch.cat([ids, torch.tensor([token])])
    assert text == eng.prompt_format.decode(stream.token_ids)


def test_stats_after_a_full_answer(eng):
    stream = eng.stream([engine.Message("user", "hi")], GREEDY)
    chunks = list(stream)
    stats = stream.stats
    assert chunks and all(isinstance(c, str) and c for c in chunks)
    assert stats.stop_reason == "length" and stats.new_tokens == GREEDY.max_new_tokens
    assert stats.prompt_tokens == len(eng.prepare([engine.Message("user", "hi")]).input_ids)
    assert stats.time_to_first_token > 0 and stats.tokens_per_second > 0 and stats.error is None


def test_seeded_sampling_is_reproducible(eng):
    settings = engine.GenerationSettings(temperature=1.0, top_p=0.9, top_k=40, max_new_tokens=16, seed=123)
    a = eng.stream([engine.Message("user", "hi")], settings)
    b = eng.stream([engine.Message("user", "hi")], settings)
    assert "".join(a) == "".join(b) and a.token_ids == b.token_ids


def test_stop_string_is_never_shown(eng):
    chain = _ids(eng, " Hello there User")  # ":" then follows and completes "User:"
    start = _open_turn_last_token(eng)
    colon = _ids(eng, ":")
    assert colon == [start]  # the open turn ends with ":"; it leads to the chain, and "User" leads back to ":"
    script(eng, start, chain + colon)
    stream = eng.stream([engine.Message("user", "hi")], GREEDY)
    text = "".join(stream)
    assert text == " Hello there "
    assert "User" not in text
    assert stream.stats.stop_reason == "stop_string"


def test_eos_stops_and_is_not_shown(eng):
    start = _open_turn_last_token(eng)
    chain = _ids(eng, " Bye") + [eng.prompt_format.eos_id]
    script(eng, start, chain)
    stream = eng.stream([engine.Message("user", "hi")], GREEDY)
    assert "".join(stream) == " Bye"
    assert stream.stats.stop_reason == "eos"
    assert eng.prompt_format.eos_text not in stream.text


def test_utf8_split_across_tokens_is_never_broken(eng):
    word = " 世界é"
    chain = _ids(eng, word)
    assert len(chain) > len(word)  # some characters are several byte tokens
    script(eng, _open_turn_last_token(eng), chain + [eng.prompt_format.eos_id])
    stream = eng.stream([engine.Message("user", "hi")], GREEDY)
    chunks = list(stream)
    assert "".join(chunks) == word
    assert all("\ufffd" not in c for c in chunks)


def test_cancel_before_start_produces_nothing(eng):
    cancel = threading.Event()
    cancel.set()
    stream = eng.stream([engine.Message("user", "hi")], GREEDY, cancel=cancel)
    assert list(stream) == []
    assert stream.stats.stop_reason == "cancelled" and stream.stats.new_tokens == 0


def test_cancel_mid_stream_keeps_what_was_produced(eng):
    cancel = threading.Event()
    settings = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=400)
    stream = eng.stream([engine.Message("user", "hi")], settings, cancel=cancel)
    received = []
    for chunk in stream:
        received.append(chunk)
        cancel.set()
    assert stream.stats.stop_reason == "cancelled"
    assert 1 <= stream.stats.new_tokens < 400
    assert "".join(received) == stream.text


def test_breaking_out_of_the_loop_stops_the_worker(eng):
    stream = eng.stream([engine.Message("user", "hi")], engine.GenerationSettings(temperature=0, max_new_tokens=400))
    for _ in stream:
        break
    assert stream.stats.stop_reason == "cancelled"
    # The engine is free again: the next generation runs.
    again = eng.stream([engine.Message("user", "hi")], GREEDY)
    assert "".join(again) and again.stats.stop_reason == "length"


def test_a_crash_in_the_worker_is_an_error_and_the_engine_stays_usable(eng, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nwith a second line")

    monkeypatch.setattr(eng.model, "forward_embeds", broken)
    stream = eng.stream([engine.Message("user", "hi")], GREEDY)
    with pytest.raises(engine.GenerationError, match="boom") as info:
        list(stream)
    assert "\n" not in str(info.value)
    assert stream.stats.stop_reason == "error"
    monkeypatch.undo()
    assert "".join(eng.stream([engine.Message("user", "hi")], GREEDY))


def test_bad_image_fails_before_any_compute(eng, tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    with pytest.raises(engine.ImageError, match="not-an-image.png"):
        eng.stream([engine.Message("user", "look", images=[bad])], GREEDY)
    assert "".join(eng.stream([engine.Message("user", "look")], GREEDY))


def test_text_only_turns_never_run_the_vision_tower(eng, monkeypatch):
    calls = []
    original = eng.model.vision_model.forward
    monkeypatch.setattr(eng.model.vision_model, "forward", lambda x: calls.append(x.shape) or original(x))
    "".join(eng.stream([engine.Message("user", "no picture")], GREEDY))
    assert calls == []
    from PIL import Image

    "".join(eng.stream([engine.Message("user", "a picture", images=[Image.new("RGB", (9, 9))])], GREEDY))
    assert len(calls) == 1 and calls[0][0] == 1


def test_stop_strings_cut_at_the_earliest_one_present_whatever_their_order():
    from engine.detokenize import StopStringFilter

    cut = StopStringFilter(["END", "\n\n"])
    shown = cut.push("first part\n\nsecond") + cut.push(" part END") + cut.flush()
    assert shown == "first part" and cut.stopped
    held = StopStringFilter(["END"])
    assert held.push("text E") == "text " and held.push("ND!") == "" and held.stopped  # "E" waited: it began END
