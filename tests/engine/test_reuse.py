"""Prefix reuse across turns and the image-feature cache give exactly the same greedy output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import engine
from engine.caches.reuse import CachedContext, LruStore, Match, best_match, common_prefix
from engine.engine import MAX_CACHED_CONTEXTS

GREEDY = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=12)


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=["siglip", "hybrid"])
def engines(request, tiny_checkpoints):
    folder = tiny_checkpoints[request.param]
    return engine.load(str(folder), prefix_cache=True), engine.load(str(folder), prefix_cache=False)


def _turn(eng, history, key: str | None = "pane"):
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
        evicted.append(_turn(fast, [engine.Message("user", f"Pane {pane} says hello.")],
                             key=f"pane-{pane}")[2].evicted_contexts)
    assert evicted == [0] * MAX_CACHED_CONTEXTS + [1]
    # pane-1 is still cached: its follow-up reuses its whole first turn; pane-0 was evicted, so it reuses
    # only what every pane's prompt shares (the system prompt and "Pane "), taken from another pane's context.
    follow = [engine.Message("user", "Pane 1 says hello."), engine.Message("assistant", "ok"),
              engine.Message("user", "again")]
    first_turn = len(fast.prepare(follow[:1]).input_ids)
    assert _turn(fast, follow, key="pane-1")[2].reused_tokens >= first_turn
    follow0 = [engine.Message("user", "Pane 0 says hello."), engine.Message("assistant", "ok"),
               engine.Message("user", "again")]
    others = [follow] + [[engine.Message("user", f"Pane {pane} says hello.")]
                         for pane in range(2, MAX_CACHED_CONTEXTS + 1)]
    shared = max(common_prefix(fast.prepare(follow0).input_ids.tolist(), fast.prepare(other).input_ids.tolist())
                 for other in others)
    assert 0 < _turn(fast, follow0, key="pane-0")[2].reused_tokens == shared < first_turn


def test_a_failed_generation_leaves_no_cache(engines, monkeypatch):
    fast, plain = engines
    fast.forget()
    history = [engine.Message("user", "Hello?")]
    _turn(fast, history)
    import engine.batch as batch_module

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(batch_module, "run_decode", broken)
    with pytest.raises(engine.GenerationError):
        _turn(fast, history)
    monkeypatch.undo()
    a = _turn(fast, history)
    assert a[2].reused_tokens == 0 and a[1] == _turn(plain, history)[1]


@pytest.fixture
def decoded(monkeypatch) -> list:
    """The image sources the engine decodes (``load_image`` calls), in order."""
    import engine.caches.features as features_module

    calls: list = []
    real = features_module.load_image
    monkeypatch.setattr(features_module, "load_image", lambda source: calls.append(source) or real(source))
    return calls


def test_an_unchanged_image_file_is_decoded_once(engines, tmp_path, decoded):
    fast, _ = engines
    calls = decoded
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


def test_the_same_image_bytes_sent_again_are_decoded_once(engines, tmp_path, decoded):
    """A stateless API client sends every picture each turn: the engine knows the bytes by their digest."""
    fast, _ = engines
    calls = decoded
    path = tmp_path / "photo.png"
    _picture(8).save(path)
    data = path.read_bytes()
    first = fast.prepare([engine.Message("user", "What is it?", images=[engine.EncodedImage(data)])])
    again = fast.prepare([engine.Message("user", "What is it?", images=[engine.EncodedImage(bytes(data))])])
    assert len(calls) == 1 and first.image_keys == again.image_keys
    assert first.image_keys == fast.prepare([engine.Message("user", "x", images=[path])]).image_keys  # same pixels
    _picture(9).save(path)
    other = fast.prepare([engine.Message("user", "What is it?", images=[engine.EncodedImage(path.read_bytes())])])
    assert other.image_keys != first.image_keys


def test_interleaved_conversations_without_keys_each_reuse_their_own_context(engines):
    fast, plain = engines
    fast.forget()
    chats: dict[str, list[engine.Message]] = {"a": [], "b": []}
    previous: dict[str, int] = {}
    questions = {"a": ["Tell me about apples.", "And pears?", "Which is sweeter?"],
                 "b": ["What is a river?", "Where do they end?", "Name a long one."]}
    for turn in range(3):
        for name in ("a", "b"):  # a stateless client: no cache key, the whole history every time
            history = chats[name]
            history.append(engine.Message("user", questions[name][turn]))
            text, ids, stats = _turn(fast, history, key=None)
            assert ids == _turn(plain, history, key=None)[1]
            if turn:
                # At least the whole previous prompt came from this conversation's own context.
                assert stats.reused_tokens >= previous[name]
            previous[name] = stats.prompt_tokens
            history.append(engine.Message("assistant", text))
    assert len(fast._contexts) == 2  # each conversation continued in its one slot


def test_continuing_a_conversation_after_another_ran_reuses_its_context(engines):
    fast, plain = engines
    fast.forget()
    a = [engine.Message("user", "Look at this.", images=[_picture(8)])]
    a_text, _, _ = _turn(fast, a, key=None)
    b = [engine.Message("user", "Something else entirely.")]
    _turn(fast, b, key=None)
    a += [engine.Message("assistant", a_text), engine.Message("user", "What colour is it?")]
    fast.vision_calls = 0
    text, ids, stats = _turn(fast, a, key=None)
    assert ids == _turn(plain, a, key=None)[1]
    # A's image and its first answer came from A's context, not B's (which shares only the system prompt).
    assert stats.reused_tokens >= len(fast.prepare(a[:1]).input_ids)
    assert fast.vision_calls == 0


def test_a_fresh_key_finds_the_conversation_it_continues(engines):
    fast, plain = engines
    fast.forget()
    history = [engine.Message("user", "Hello there.")]
    text, _, _ = _turn(fast, history, key="request-1")
    history += [engine.Message("assistant", text), engine.Message("user", "Again.")]
    _, ids, stats = _turn(fast, history, key="request-2")
    assert ids == _turn(plain, history)[1]
    assert stats.reused_tokens >= len(fast.prepare(history[:1]).input_ids)


def test_the_least_recently_used_context_is_evicted_without_keys(engines):
    fast, _ = engines
    fast.forget()
    firsts = [[engine.Message("user", f"Conversation {n} is about topic {n}.")] for n in range(MAX_CACHED_CONTEXTS + 1)]
    answers = []
    for number, history in enumerate(firsts):
        text, _, stats = _turn(fast, history, key=None)
        answers.append(text)
        assert stats.evicted_contexts == (1 if number == MAX_CACHED_CONTEXTS else 0)

    def follow_up(n: int) -> list[engine.Message]:
        return firsts[n] + [engine.Message("assistant", answers[n]), engine.Message("user", "More?")]

    # Conversation 1 is still kept and continues where it was; conversation 0 was dropped first.
    assert _turn(fast, follow_up(1), key=None)[2].reused_tokens >= len(fast.prepare(firsts[1]).input_ids)
    # (it reuses only the system prompt and "Conversation " it shares with the others, not its own first turn)
    assert _turn(fast, follow_up(0), key=None)[2].reused_tokens < len(fast.prepare(firsts[0]).input_ids) - 5


def test_forget_by_key_drops_only_that_conversation(engines):
    fast, _ = engines
    fast.forget()
    one, two = [engine.Message("user", "First pane.")], [engine.Message("user", "Second pane.")]
    _turn(fast, one, key="one")
    _turn(fast, two, key="two")
    fast.forget("one")
    assert [context.label for _, context in fast._contexts.newest_first()] == ["two"]
    # With its context gone, pane one reuses only what it shares with pane two.
    assert _turn(fast, one, key="one")[2].reused_tokens < len(fast.prepare(one).input_ids) - 1


def test_longest_prefix_wins_and_a_tie_goes_to_the_most_recent():
    store = LruStore(4)
    store.put("old", CachedContext([1, 2, 3, 9], cache=None, prompt_length=3))
    store.put("long", CachedContext([1, 2, 3, 4, 5], cache=None, prompt_length=4))
    store.put("new", CachedContext([1, 2, 3, 8], cache=None, prompt_length=3))
    match = best_match(store, [1, 2, 3, 4, 5, 6], "fresh")
    assert (match.source, match.reused, match.takes_over, match.target) == ("long", 5, True, "long")
    tie = best_match(store, [1, 2, 3, 7], "fresh")
    assert (tie.source, tie.reused, tie.takes_over, tie.target) == ("new", 3, True, "new")
    # A prompt that leaves a context inside its prompt part branches off: the original stays for its owner.
    branch = best_match(store, [1, 2, 6], "fresh")
    assert (branch.source, branch.reused, branch.takes_over, branch.target) == ("new", 2, False, "fresh")
    assert best_match(store, [7, 7], "fresh") == Match(None, None, 0, False, "fresh")


def test_one_key_shared_by_every_request_still_keeps_conversations_apart(engines):
    fast, plain = engines
    fast.forget()
    a, b = [engine.Message("user", "About apples.")], [engine.Message("user", "About rivers.")]
    a_text = _turn(fast, a, key="serve")[0]
    _turn(fast, b, key="serve")
    a += [engine.Message("assistant", a_text), engine.Message("user", "More.")]
    _, ids, stats = _turn(fast, a, key="serve")
    assert ids == _turn(plain, a)[1] and stats.reused_tokens >= len(fast.prepare(a[:1]).input_ids)
    assert len(fast._contexts) == 2
