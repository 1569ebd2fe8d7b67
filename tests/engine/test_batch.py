"""Continuous batching (``engine.batch``) on the tiny checkpoint: real model, real threads.

The bound that batching keeps to: batching changes the order of sums (a
[n, D] matmul instead of n [1, D] ones, padded attention under a mask,
chunked prefill), so greedy decoding in a batch gives the same tokens as the
same conversation alone (``max_batch=1``, the unbatched path) up to the
first step where the alone run's top-1 margin (best logit minus second) is
below DELTA; from there on the two may diverge, legitimately.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import engine
from engine import batch as batching
from engine.types import Prepared

GREEDY = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=16, ignore_eos=True)
# The top-1 margin under which batched and alone greedy decoding may pick different tokens (see the docstring),
# from the best logit. float32: measured differences are at most 5e-6 (the tiny model 2e-6, the full-size 1.3B's
# layers 5.2e-6), so 1e-3 leaves a wide berth. int8 runs its matmuls with bfloat16 activations and hands back
# bfloat16-rounded logits: measured differences are one bfloat16 step of the logit (0.0156 on the full-size 1.3B
# at logits near 2-4), so the margin is two steps at the top logit's size, |top| / 64.
DELTA = {"none": lambda top: 1e-3, "int8": lambda top: max(1e-3, abs(top) / 64)}
WAIT = 120.0  # seconds a condition may take on a busy machine


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class Reader:
    """Iterates one stream on a thread of its own, as a front end would."""

    def __init__(self, stream):
        self.stream = stream
        self.chunks: list[str] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for chunk in self.stream:
                self.chunks.append(chunk)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def join(self):
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the stream did not end"
        assert self.error is None, self.error
        return self.stream


def _all_at_once(eng, start) -> list:
    """``start()``'s streams, all waiting in the scheduler before its next step (so their batch does not hang on
    how fast threads start): the scheduler steps under the engine lock, held here until every one was submitted."""
    with eng._lock:
        readers = start()
        _wait_for(lambda: eng.batch_counts()[1] == len(readers), "every request to reach the scheduler")
    return readers


def _batch_sizes(eng) -> list[int]:
    """Records the batch size of every language-model forward (an observer: the model runs unchanged)."""
    sizes: list[int] = []
    eng.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True)
    return sizes


def _margins(eng, messages, tokens: list[int]) -> list[tuple[float, float]]:
    """The alone engine's (best logit, top-1 margin) at each generated step (teacher-forced over prompt + answer)."""
    prepared = eng.prepare(messages)
    ids = torch.cat([prepared.input_ids, torch.tensor(tokens, dtype=torch.long)])
    logits = eng.logits(Prepared(ids, prepared.images, prepared.image_keys, prepared.prompt))
    steps = logits[len(prepared.input_ids) - 1 : len(ids) - 1]
    top = steps.topk(2, dim=-1).values
    return list(zip(top[:, 0].tolist(), (top[:, 0] - top[:, 1]).tolist(), strict=True))


def _agree_within_bound(alone_eng, messages, alone: list[int], batched: list[int], delta) -> int:
    """Assert the bound for one answer; returns how many steps it compared."""
    margins = _margins(alone_eng, messages, alone)
    for step, (a, b) in enumerate(zip(alone, batched, strict=True)):
        best, margin = margins[step]
        if margin < delta(best):
            return step  # from here on the two may diverge
        assert a == b, f"step {step}: batched {b} != alone {a} although the top-1 margin is {margin:.4g}"
    return len(alone)


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_greedy_in_a_batch_agrees_with_alone_over_a_multi_turn_chat_with_images(tiny_siglip, quantize, monkeypatch):
    monkeypatch.setattr(batching, "PREFILL_CHUNK", 32)  # several chunks per prompt: a newcomer's prefill interleaves
    alone = engine.load(str(tiny_siglip), device="cpu", quantize=quantize)
    batched = engine.load(str(tiny_siglip), device="cpu", quantize=quantize, max_batch=4)
    sizes = _batch_sizes(batched)
    chats = [[engine.Message("user", f"Look at picture {n}. What is in it?", images=[_picture(n)])] for n in range(4)]
    compared = 0
    for turn in range(2):
        readers = _all_at_once(batched, lambda: [Reader(batched.stream(chat, GREEDY)) for chat in chats])
        answers = [reader.join() for reader in readers]
        for chat, got in zip(chats, answers, strict=True):
            assert got.stats.stop_reason == "length" and got.stats.new_tokens == GREEDY.max_new_tokens
            if turn:
                assert got.stats.reused_tokens > 0  # the first turn's context was kept and reused
            own = alone.stream(chat, GREEDY)
            list(own)
            compared += _agree_within_bound(alone, chat, own.token_ids, got.token_ids, DELTA[quantize])
        for chat, got in zip(chats, answers, strict=True):
            chat += [engine.Message("assistant", got.text), engine.Message("user", "And then? Say more.")]
    assert max(sizes) == 4  # all four decoded together
    assert compared >= 64, f"only {compared} of 128 steps were compared"


def test_concurrent_streams_all_produce_output_and_images_are_encoded_once(tiny_siglip):
    eng = engine.load(str(tiny_siglip), device="cpu", max_batch=3)
    sizes = _batch_sizes(eng)
    picture = _picture(5)
    chats = [[engine.Message("user", f"Question {n}", images=[picture])] for n in range(5)]
    readers = _all_at_once(eng, lambda: [Reader(eng.stream(chat, GREEDY)) for chat in chats])
    for reader in readers:
        stream = reader.join()
        assert stream.text and stream.stats.new_tokens == GREEDY.max_new_tokens
        assert stream.stats.time_to_first_token is not None and stream.stats.tokens_per_second
    assert max(sizes) == 3
    assert eng.vision_calls == 1  # one picture, five requests: the image-feature cache holds across the batch
    assert eng.batch_counts() == (0, 0)


def test_a_cancel_frees_the_place_for_a_waiting_request(tiny_siglip):
    eng = engine.load(str(tiny_siglip), device="cpu", max_batch=2)
    long = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=3000, ignore_eos=True)
    first, second = (Reader(eng.stream([engine.Message("user", f"Story {n}")], long)) for n in range(2))
    _wait_for(lambda: first.chunks and second.chunks, "both long answers to stream")
    third = Reader(eng.stream([engine.Message("user", "Short one")], GREEDY))
    _wait_for(lambda: eng.batch_counts() == (2, 1), "the third request to wait")
    first.stream.cancel.set()
    _wait_for(lambda: third.chunks, "the third request to stream")
    assert second.stream.stats.stop_reason is None  # it got the cancelled one's place, not the end of the batch
    second.stream.close()  # leaving early cancels too
    assert second.stream.stats.stop_reason == "cancelled" and second.stream.stats.new_tokens < 3000
    assert third.join().stats.new_tokens == GREEDY.max_new_tokens
    assert first.join().stats.stop_reason == "cancelled" and first.stream.stats.new_tokens > 0
    assert eng.batch_counts() == (0, 0)


def test_per_request_seeds_reproduce_and_differ(tiny_siglip):
    eng = engine.load(str(tiny_siglip), device="cpu", max_batch=4)
    messages = [engine.Message("user", "Tell me a story.")]

    def sampled(seed: int) -> engine.GenerationSettings:
        return engine.GenerationSettings(temperature=1.5, top_p=1.0, top_k=0, repetition_penalty=1.0,
                                         max_new_tokens=24, seed=seed, ignore_eos=True)

    first = [Reader(eng.stream(messages, sampled(seed))) for seed in (1, 2, 1)]
    a, b, c = (reader.join().token_ids for reader in first)
    assert a == c  # the same seed in one batch, side by side
    assert a != b
    again = Reader(eng.stream(messages, sampled(1))).join().token_ids  # the same seed alone, later
    assert again == a


def test_stop_strings_are_per_request(tiny_siglip):
    alone = engine.load(str(tiny_siglip), device="cpu")
    messages = [engine.Message("user", "Tell me a story.")]
    full = alone.stream(messages, GREEDY)
    text = "".join(full)
    assert len(text) > 6
    stop = text[3:6]
    eng = engine.load(str(tiny_siglip), device="cpu", max_batch=2)
    cut, whole = Reader(eng.stream(messages, GREEDY, stop=[stop])), Reader(eng.stream(messages, GREEDY))
    assert cut.join().text == text[: text.index(stop)] and cut.stream.stats.stop_reason == "stop_string"
    assert whole.join().text == text and whole.stream.stats.stop_reason == "length"
    # The unbatched path takes the same argument.
    assert "".join(alone.stream(messages, GREEDY, stop=[stop])) == text[: text.index(stop)]


def test_a_failing_request_ends_alone_and_the_batch_goes_on(tiny_siglip):
    eng = engine.load(str(tiny_siglip), device="cpu", max_batch=2)
    good = Reader(eng.stream([engine.Message("user", "Fine")], GREEDY))
    _wait_for(lambda: good.chunks, "the good answer to stream")
    broken = engine.GenerationSettings(temperature=1.0)
    broken.top_k = -1  # past the settings' own check: transformers' top-k warper refuses it when admitted
    with pytest.raises(engine.GenerationError, match="generation failed: ValueError"):
        list(eng.stream([engine.Message("user", "Broken")], broken))
    assert good.join().stats.new_tokens == GREEDY.max_new_tokens
    assert good.stream.stats.stop_reason == "length"


def test_max_batch_is_checked_and_compile_is_left_out_of_batches(tiny_siglip):
    with pytest.raises(ValueError, match="max_batch must be at least 1, not 0"):
        engine.load(str(tiny_siglip), device="cpu", max_batch=0)
    eng = engine.load(str(tiny_siglip), device="cpu", max_batch=2, compile=True)
    assert not eng.info.compiled and eng.info.compile_note == "batches decode eagerly (--max-batch 2)"
    assert eng.kept_contexts >= 2


def test_the_default_batch_is_per_device_and_one_with_compile():
    assert engine.default_max_batch(torch.device("cuda")) == 8
    assert engine.default_max_batch(torch.device("cuda"), compile=True) == 1  # its CUDA graphs are for one sequence
    assert engine.default_max_batch(torch.device("cpu")) == batching.DEFAULT_MAX_BATCH["cpu"]
    assert engine.default_max_batch(torch.device("mps")) == 1


def test_an_unexpected_failure_in_a_step_ends_the_running_answers_and_the_next_request_runs(tiny_siglip, monkeypatch):
    eng = engine.load(str(tiny_siglip), device="cpu", max_batch=2)

    def broken(model):
        raise RuntimeError("no cache today")

    monkeypatch.setattr(batching, "new_cache", broken)  # keeping the finished answer's context fails
    failed = Reader(eng.stream([engine.Message("user", "hi")], GREEDY))
    failed.thread.join(WAIT)
    assert not failed.thread.is_alive(), "the stream was left hanging"
    assert isinstance(failed.error, engine.GenerationError)
    assert str(failed.error) == "generation failed: RuntimeError: no cache today"
    monkeypatch.undo()
    again = eng.stream([engine.Message("user", "hi")], GREEDY)
    list(again)
    assert again.stats.new_tokens == GREEDY.max_new_tokens and eng.batch_counts() == (0, 0)


def test_a_newcomers_images_are_encoded_one_per_step_between_the_running_answers_steps(tiny_siglip):
    eng = engine.load(str(tiny_siglip), device="cpu", max_batch=2)
    log: list[tuple[str, int]] = []
    eng.model.vision_model.register_forward_pre_hook(lambda module, args: log.append(("vision", args[0].shape[0])))
    eng.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: log.append(("language", kwargs["inputs_embeds"].shape[0])), with_kwargs=True)
    long = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=3000, ignore_eos=True)
    running = Reader(eng.stream([engine.Message("user", "Keep going")], long))
    _wait_for(lambda: running.chunks, "the running answer to stream")
    newcomer = Reader(eng.stream([engine.Message("user", "Two pictures", images=[_picture(7), _picture(8)])], GREEDY))
    assert newcomer.join().stats.new_tokens == GREEDY.max_new_tokens
    running.stream.close()
    vision = [at for at, (kind, _) in enumerate(log) if kind == "vision"]
    assert [log[at][1] for at in vision] == [1, 1]  # one image each
    assert any(log[at] == ("language", 1) for at in range(vision[0] + 1, vision[1]))  # the running one decoded between


def test_a_prompt_with_more_images_than_the_feature_cache_holds_is_answered(tiny_siglip):
    eng = engine.load(str(tiny_siglip), device="cpu", max_batch=2)
    eng._features.max_entries = 1  # each image encoded evicts the one before
    pictures = [_picture(n) for n in range(20, 23)]
    reader = Reader(eng.stream([engine.Message("user", "Three pictures", images=pictures)], GREEDY))
    assert reader.join().stats.new_tokens == GREEDY.max_new_tokens
