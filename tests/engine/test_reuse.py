"""Prefix reuse across turns and the image-feature cache give exactly the same greedy output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import engine
from engine.engine import MAX_CACHED_CONTEXTS

GREEDY = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=12)


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=["siglip", "hybrid"])
def engines(request, tiny_checkpoints):
    folder = tiny_checkpoints[request.param]
    return engine.load(str(folder), prefix_cache=True), engine.load(str(folder), prefix_cache=False)


def _turn(eng, history, key="pane"):
    stream = eng.stream(history, GREEDY, cache_key=key)
    text = "".join(stream)
    return text, stream.token_ids, stream.stats


def test_multi_turn_chat_with_images_is_identical(engines):
    fast, plain = engines
    fast.forget()
    fast.vision_calls = plain.vision_calls = 0
    history: list[engine.Message] = []
    questions = [("Look at this.", [_picture(1)]), ("And now?", []), ("Another one.", [_picture(2)]), ("Compare.", [])]
    for number, (question, images) in enumerate(questions):
        history.append(engine.Message("user", question, images=images))
        a_text, a_ids, a_stats = _turn(fast, history)
        b_text, b_ids, b_stats = _turn(plain, history)
        assert a_ids == b_ids and a_text == b_text
        assert b_stats.reused_tokens == 0
        if number:
            # Everything before this turn's new text came from the cache.
            assert a_stats.reused_tokens > a_stats.prompt_tokens // 2
        history.append(engine.Message("assistant", a_text))
    assert fast.vision_calls == 2  # each picture encoded once
    assert plain.vision_calls == 1 + 1 + 2 + 2  # upstream's way: every image, every turn


def test_undo_regenerate_and_system_change_stay_identical(engines):
    fast, plain = engines
    fast.forget()
    history = [engine.Message("user", "First?", images=[_picture(3)])]
    first, _, _ = _turn(fast, history)
    history += [engine.Message("assistant", first), engine.Message("user", "Second?")]
    _turn(fast, history)
    # /regenerate: the same prompt again reuses everything but its last position.
    a = _turn(fast, history)
    assert a[1] == _turn(plain, history)[1]
    assert a[2].reused_tokens == a[2].prompt_tokens - 1
    # /undo then a different question.
    history[-1] = engine.Message("user", "A different second question?")
    a = _turn(fast, history)
    assert a[1] == _turn(plain, history)[1] and a[2].reused_tokens > 0
    # A new system prompt changes the very first text: almost nothing is reused.
    stream = fast.stream(history, GREEDY, system="Answer in French.", cache_key="pane")
    text = "".join(stream)
    reference = plain.stream(history, GREEDY, system="Answer in French.")
    assert text == "".join(reference) and stream.stats.reused_tokens <= 1


def test_a_different_picture_is_never_taken_from_the_cache(engines):
    fast, plain = engines
    fast.forget()
    _turn(fast, [engine.Message("user", "What is it?", images=[_picture(4)])])
    swapped = [engine.Message("user", "What is it?", images=[_picture(5)])]
    a = _turn(fast, swapped)
    assert a[1] == _turn(plain, swapped)[1]
    first_image_position = int((fast.prepare(swapped).input_ids == fast.prompt_format.image_id).nonzero()[0])
    assert a[2].reused_tokens <= first_image_position


def test_each_pane_has_its_own_cache_and_the_oldest_is_evicted(engines):
    fast, _ = engines
    fast.forget()
    evicted = []
    for pane in range(MAX_CACHED_CONTEXTS + 1):
        evicted.append(_turn(fast, [engine.Message("user", f"Pane {pane} says hello.")], key=f"pane-{pane}")[2].evicted_contexts)
    assert evicted == [0] * MAX_CACHED_CONTEXTS + [1]
    # pane-1 is still cached: its follow-up reuses its prefix; pane-0 was evicted and starts over.
    follow = [engine.Message("user", "Pane 1 says hello."), engine.Message("assistant", "ok"), engine.Message("user", "again")]
    assert _turn(fast, follow, key="pane-1")[2].reused_tokens > 10
    follow0 = [engine.Message("user", "Pane 0 says hello."), engine.Message("assistant", "ok"), engine.Message("user", "again")]
    assert _turn(fast, follow0, key="pane-0")[2].reused_tokens == 0


def test_a_failed_generation_leaves_no_cache(engines, monkeypatch):
    fast, plain = engines
    fast.forget()
    history = [engine.Message("user", "Hello?")]
    _turn(fast, history)
    import engine.engine as engine_module

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(engine_module, "run_decode", broken)
    with pytest.raises(engine.GenerationError):
        _turn(fast, history)
    monkeypatch.undo()
    a = _turn(fast, history)
    assert a[2].reused_tokens == 0 and a[1] == _turn(plain, history)[1]


def test_an_unchanged_image_file_is_decoded_once(engines, tmp_path, monkeypatch):
    fast, _ = engines
    import engine.engine as engine_module

    calls = []
    real = engine_module.load_image
    monkeypatch.setattr(engine_module, "load_image", lambda source: calls.append(source) or real(source))
    path = tmp_path / "photo.png"
    _picture(6).save(path)
    history = [engine.Message("user", "What is it?", images=[path])]
    first = fast.prepare(history)
    second = fast.prepare(history + [engine.Message("assistant", "A photo."), engine.Message("user", "Sure?")])
    assert len(calls) == 1 and first.image_keys == second.image_keys
    assert torch.equal(first.images[0], second.images[0])
    _picture(7).save(path)  # the file changed: read again, new content key
    third = fast.prepare(history)
    assert len(calls) == 2 and third.image_keys != first.image_keys
