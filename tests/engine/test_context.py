"""Context window: drop the oldest whole turns, refuse a turn that cannot fit."""

from __future__ import annotations

import pytest
from PIL import Image

import engine


@pytest.fixture
def folder(tiny_siglip):
    return tiny_siglip


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
    assert (f"User: Question number {first_kept} " in prepared.prompt
            or f"Question number {first_kept} " in prepared.prompt)
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
    stream = eng.stream([engine.Message("user", "hi")], engine.GenerationSettings(temperature=0, max_new_tokens=500),
                        system="")
    "".join(stream)
    assert stream.stats.prompt_tokens + stream.stats.new_tokens <= 60
    assert stream.stats.stop_reason == "length"


# --- dropping turns by counting: the same ids as encoding every candidate -----------------------


def _old_pieces(fmt, messages, system):
    """``PromptFormat.pieces`` as it was before ``fit`` (kept frozen here as the reference)."""
    from engine.prompt import DEFAULT_SYSTEM_PROMPT, ROLE_NAMES, USER_SEP, ImageSlot, SpecialToken, strip_ends

    out, images = [], 0

    def content(message):
        nonlocal images
        slots = []
        for _ in message.images:
            slots.append(ImageSlot(images))
            images += 1
        text = message.text.rstrip() if slots else message.text.strip()
        return [*slots, text] if text else slots

    if fmt.variant == "base":
        for message in messages:
            out += content(message)
        return strip_ends(out)
    system = DEFAULT_SYSTEM_PROMPT if system is None else system
    if system:
        out.append(system + USER_SEP)
    for message in messages:
        body = content(message)
        role = ROLE_NAMES[message.role]
        if not body:
            out.append(role + ":")
            continue
        out.append(role + ": ")
        out += body
        out.append(USER_SEP if message.role == "user" else SpecialToken(fmt.eos_id, fmt.eos_text))
    if messages and messages[-1].role == "user":
        out.append(ROLE_NAMES["assistant"] + ":")
    return strip_ends(out)


def _old_lengths(fmt, messages, system, starts):
    return [len(fmt.encode(_old_pieces(fmt, messages[start:], system))) for start in starts]


_TEXTS = ["", " ", "\n\n", "hi", "  hello there  ", "Assistant: no", "User:", "a\n\nb", "end.\n\n\n",
          "日本語のテキスト", "<image_placeholder> literal", "x" * 50, "word " * 30, "\tTabs\t", "émoji 🙂 ok"]


def _random_history(rng) -> list[engine.Message]:
    messages = []
    for _ in range(rng.randint(1, 14)):
        role = rng.choice(["user", "user", "assistant"]) if messages else "user"
        if rng.random() < 0.3:
            role = "assistant" if role == "user" else "user"
        text = "".join(rng.choice(_TEXTS) for _ in range(rng.randint(0, 3)))
        images = [Image.new("RGB", (2, 2))] * (rng.random() < 0.25) * rng.randint(1, 2)
        messages.append(engine.Message(role, text, images=images))
    return messages


def test_fit_gives_the_same_ids_as_encoding_every_candidate(folder):
    """Token for token, on varied histories, systems, both variants and budgets at every boundary."""
    import copy
    import random

    chat = engine.load(str(folder)).prompt_format
    base = copy.copy(chat)
    base.variant = "base"
    rng = random.Random(1234)
    checked = 0
    for case in range(300):
        fmt = base if case % 5 == 0 else chat
        messages = _random_history(rng)
        system = rng.choice([None, "", "  ", "Be brief.", "Be brief.\n\n", "  Be brief"])
        starts = [0] + [i for i, m in enumerate(messages) if m.role == "user" and i > 0]
        lengths = _old_lengths(fmt, messages, system, starts)
        budgets = {n + d for n in lengths for d in (-1, 0, 1)} | {0, 1, 10**6}
        for budget in sorted(budgets):
            expected = next((i for i, n in enumerate(lengths) if n <= budget), len(starts) - 1)
            got = fmt.fit(messages, system, starts, budget)
            assert got == expected, (case, budget, lengths)
            kept = messages[starts[got]:]
            assert fmt.encode(fmt.pieces(kept, system)) == fmt.encode(_old_pieces(fmt, kept, system))
            checked += 1
    assert checked > 3000


def test_prepare_drops_the_same_turns_as_before(folder):
    eng = engine.load(str(folder))
    history = _history(8)
    starts = [0] + [i for i, m in enumerate(history) if m.role == "user" and i > 0]
    lengths = _old_lengths(eng.prompt_format, history, None, starts)
    for limit in (lengths[0], lengths[3], lengths[3] - 1, lengths[-1]):
        small = engine.load(str(folder), context_length=limit + 7)
        prepared = small.prepare(history, reserve=7)
        dropped = next((i for i, n in enumerate(lengths) if n <= limit), len(starts) - 1)
        assert prepared.dropped_turns == dropped
        kept = history[starts[dropped]:]
        assert prepared.input_ids.tolist() == small.prompt_format.encode(_old_pieces(small.prompt_format, kept, None))


def test_a_long_history_fits_in_linear_time(folder):
    """1,000 messages: each text run encoded about once, not the whole rest once per dropped turn."""
    eng = engine.load(str(folder))
    fmt = eng.prompt_format
    calls = []
    plain = fmt.text_tokenizer

    class Counting:
        def encode(self, text, **kwargs):
            calls.append(len(text))
            return plain.encode(text, **kwargs)

    fmt.text_tokenizer = Counting()
    try:
        history = []
        for i in range(500):
            history.append(engine.Message("user", f"Question {i} " + "about the weather " * 10))
            history.append(engine.Message("assistant", f"Answer {i} " + "it is sunny " * 20))
        history.append(engine.Message("user", "final?"))
        total = sum(len(m.text) for m in history)
        prepared = eng.prepare(history, reserve=64)
    finally:
        fmt.text_tokenizer = plain
    assert prepared.dropped_turns > 400 and len(prepared.input_ids) + 64 <= eng.context_length
    assert sum(calls) < 3 * total


def test_fit_encodes_only_the_turns_it_keeps_and_one_more(folder):
    """A long history in a small window: fitting walks back from the newest turn and stops once the
    window is full; the older turns are never tokenized (a 20 MB transcript took a minute before)."""
    import re

    eng = engine.load(str(folder))
    fmt = eng.prompt_format
    encoded: list[str] = []
    plain = fmt.text_tokenizer

    class Counting:
        def encode(self, text, **kwargs):
            encoded.append(text)
            return plain.encode(text, **kwargs)

    history = []
    for i in range(2000):
        history.append(engine.Message("user", f"Question q{i}q " + "about the weather " * 10))
        history.append(engine.Message("assistant", f"Answer a{i}a " + "it is sunny " * 20))
    history.append(engine.Message("user", "final?"))
    starts = [0] + [i for i, m in enumerate(history) if m.role == "user" and i > 0]
    fmt.text_tokenizer = Counting()
    try:
        dropped = fmt.fit(history, None, starts, eng.context_length - 64)
    finally:
        fmt.text_tokenizer = plain
    first_kept = dropped  # turn numbers: turn i starts at starts[i]
    assert 1900 < first_kept < 2000
    turns = {int(n) for text in encoded for n in re.findall(r"[qa](\d+)[qa]", text)}
    assert turns and min(turns) >= first_kept - 1  # the kept turns, and the one that did not fit
    assert len(encoded) <= 2 * (2000 - first_kept) + 4
    kept = history[starts[dropped]:]
    assert len(fmt.encode(fmt.pieces(kept, None))) <= eng.context_length - 64
    assert len(fmt.encode(fmt.pieces(history[starts[dropped - 1]:], None))) > eng.context_length - 64
