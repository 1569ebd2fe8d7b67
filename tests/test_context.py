"""Context window: drop the oldest whole turns, refuse a turn that cannot fit."""

from __future__ import annotations

import pytest
from PIL import Image

import engine
from engine.fixtures import write_checkpoint


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ctx") / "tiny")


def _history(turns: int) -> list[engine.Message]:
    messages = []
    for i in range(turns):
        images = [Image.new("RGB", (8, 8), (i * 20 % 256, 0, 0))] if i % 2 == 0 else []
        messages.append(engine.Message("user", f"Question number {i} about the weather today?", images=images))
        messages.append(engine.Message("assistant", f"Answer number {i}: it is sunny and warm."))
    messages.append(engine.Message("user", "Final question?"))
    return messages


def test_default_context_is_4096(folder):
    assert engine.load(str(folder)).context_length == 4096


def test_everything_kept_when_it_fits(folder):
    eng = engine.load(str(folder))
    prepared = eng.prepare(_history(3))
    assert prepared.dropped_turns == 0 and len(prepared.images) == 2


def test_oldest_whole_turns_are_dropped_with_their_images(folder):
    full = engine.load(str(folder)).prepare(_history(6))
    limit = len(full.input_ids) - 20
    eng = engine.load(str(folder), context_length=limit)
    prepared = eng.prepare(_history(6))
    assert prepared.dropped_turns >= 1
    assert len(prepared.input_ids) <= limit
    first_kept = prepared.dropped_turns
    assert f"User: Question number {first_kept} " in prepared.prompt or f"Question number {first_kept} " in prepared.prompt
    assert f"Question number {first_kept - 1} " not in prepared.prompt
    assert "Final question?" in prepared.prompt and prepared.prompt.startswith("You are a helpful")
    kept_images = sum(1 for i in range(first_kept, 6) if i % 2 == 0)
    assert len(prepared.images) == kept_images
    assert int((prepared.input_ids == eng.prompt_format.image_id).sum()) == kept_images * 16


def test_stream_reserves_room_for_the_answer_and_reports_drops(folder):
    base = engine.load(str(folder)).prepare(_history(4))
    eng = engine.load(str(folder), context_length=len(base.input_ids) + 5)
    stream = eng.stream(_history(4), engine.GenerationSettings(temperature=0, max_new_tokens=40))
    text = "".join(stream)
    assert stream.stats.dropped_turns >= 1
    assert stream.stats.prompt_tokens + stream.stats.new_tokens <= eng.context_length
    assert text


def test_a_single_turn_too_long_is_an_error_before_any_compute(folder):
    eng = engine.load(str(folder), context_length=120)
    with pytest.raises(engine.ContextOverflowError, match="context window is 120") as info:
        eng.stream([engine.Message("user", "word " * 400)], engine.GenerationSettings())
    assert "\n" not in str(info.value)
    # The engine is still usable with a turn that fits.
    assert "".join(eng.stream([engine.Message("user", "hi")], engine.GenerationSettings(max_new_tokens=5), system=""))


def test_answer_is_capped_by_the_window(folder):
    eng = engine.load(str(folder), context_length=60)
    stream = eng.stream([engine.Message("user", "hi")], engine.GenerationSettings(temperature=0, max_new_tokens=500), system="")
    "".join(stream)
    assert stream.stats.prompt_tokens + stream.stats.new_tokens <= 60
    assert stream.stats.stop_reason == "length"
