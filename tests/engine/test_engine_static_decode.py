"""Decoding on the static KV cache (what ``load(compile=True)`` uses on CUDA) gives the same greedy output.

The static path runs here on the CPU: eagerly, and with the decode step
traced by torch.compile (the ``aot_eager`` backend: the same graph capture
and functionalisation as on CUDA, without generating kernels), against the
growing-cache path on the same tiny checkpoints.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

import engine
import engine.batch as batch_module
from engine.engine import MAX_CACHED_CONTEXTS

GREEDY = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=10)
# Prompts of different lengths, an image in the first and third turn.
QUESTIONS = [("Look at this.", 1), ("And now?", None), ("A second picture, and a much longer question about it?", 2),
             ("Compare.", None)]


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))


@pytest.fixture
def checkpoints(tiny_checkpoints):
    return tiny_checkpoints


@pytest.fixture(params=["siglip", "hybrid"])
def towers(request, checkpoints):
    """Each tower family, for the tests where images are in the prompt."""
    return checkpoints[request.param]


@pytest.fixture
def folder(checkpoints):
    """One tower family, for the tests of the language model's decoding alone."""
    return checkpoints["siglip"]


def _static(folder, **kwargs) -> engine.Engine:
    eng = engine.load(str(folder), **kwargs)
    assert eng.use_static_decode() is None
    return eng


def _turn(eng, history, key="pane", settings=GREEDY):
    stream = eng.stream(history, settings, cache_key=key)
    text = "".join(stream)
    return text, stream.token_ids, stream.stats


def _chat(eng, key="pane", turns=QUESTIONS):
    """Runs a chat; returns per turn (generated ids, reused positions)."""
    history: list[engine.Message] = []
    out = []
    for question, seed in turns:
        history.append(engine.Message("user", question, images=[_picture(seed)] if seed else []))
        text, ids, stats = _turn(eng, history, key)
        out.append((ids, stats.reused_tokens))
        history.append(engine.Message("assistant", text))
    return out


def test_a_chat_with_images_and_reuse_is_identical(towers):
    static, dynamic = _static(towers), engine.load(str(towers))
    got, want = _chat(static), _chat(dynamic)
    assert got == want
    assert all(reused > 0 for _, reused in got[1:])  # later turns did reuse the prefix
    # Without reuse, every turn prefills the whole prompt into the static cache: the same answers.
    assert [ids for ids, _ in _chat(_static(towers, prefix_cache=False))] == [ids for ids, _ in want]
    assert not static.info.compiled and static.info.compile_note is None


def test_pane_switches_copy_contexts_in_and_out(folder):
    static, dynamic = _static(folder), engine.load(str(folder))
    histories: dict[str, list[engine.Message]] = {}
    # Three panes taking turns (each switch moves the resident one out), then more panes than are kept.
    order = ["a", "b", "a", "c", "b", "a"] + [f"extra-{n}" for n in range(MAX_CACHED_CONTEXTS)] + ["a"]
    for number, pane in enumerate(order):
        history = histories.setdefault(pane, [])
        history.append(engine.Message("user", f"Question {number} for pane {pane}" + "?" * (number % 3)))
        results = [_turn(eng, history, key=pane) for eng in (static, dynamic)]
        (text, ids, stats), (_, want_ids, want_stats) = results
        assert ids == want_ids
        assert (stats.reused_tokens, stats.evicted_contexts) == (want_stats.reused_tokens, want_stats.evicted_contexts)
        history.append(engine.Message("assistant", text))
    # Pane a was evicted by the extra panes: it reuses only the system prompt it shares with them.
    assert 0 < stats.reused_tokens < len(static.prepare(history[:-2]).input_ids) // 2
    # Compact contexts hold copies cropped to their length; only the resident one is the static cache.
    labelled = {context.label: context for _, context in static._contexts.newest_first()}
    kept = [labelled[key] for key in [f"extra-{n}" for n in range(1, MAX_CACHED_CONTEXTS)] + ["a"]]
    assert [c.cache is static._static.cache for c in kept] == [False] * (MAX_CACHED_CONTEXTS - 1) + [True]
    for context in kept[:-1]:
        assert context.cache.layers[0].keys.shape[2] == len(context.keys)


def test_conversations_without_keys_follow_the_longest_prefix_in_and_out_of_the_static_cache(folder):
    static, dynamic = _static(folder), engine.load(str(folder))
    histories: dict[str, list[engine.Message]] = {}
    previous: dict[str, int] = {}
    # Stateless requests: two conversations interleaved, then more than are kept, then the first again.
    order = ["a", "b", "a", "b", "a"] + [f"extra-{n}" for n in range(MAX_CACHED_CONTEXTS)] + ["b"]
    for number, name in enumerate(order):
        history = histories.setdefault(name, [])
        history.append(engine.Message("user", f"Question {number} for {name}" + "?" * (number % 3)))
        (text, ids, stats), (_, want_ids, want_stats) = [_turn(eng, history, key=None) for eng in (static, dynamic)]
        assert ids == want_ids
        assert (stats.reused_tokens, stats.evicted_contexts) == (want_stats.reused_tokens, want_stats.evicted_contexts)
        if name in previous and number < 5:
            assert stats.reused_tokens >= previous[name]  # its own context, whichever was resident
        previous[name] = stats.prompt_tokens
        history.append(engine.Message("assistant", text))
    # b was dropped (least recently used) by the extra conversations: only the shared system prompt is reused.
    assert stats.reused_tokens < len(static.prepare(histories["b"][:1]).input_ids) - 5 and stats.evicted_contexts == 1
    kept = [context for _, context in static._contexts.newest_first()]
    assert len(kept) == MAX_CACHED_CONTEXTS
    assert [c.cache is static._static.cache for c in kept] == [True] + [False] * (MAX_CACHED_CONTEXTS - 1)
    for context in kept[1:]:
        assert context.cache.layers[0].keys.shape[2] == len(context.keys)


def test_the_compiled_step_is_traced_once_for_every_turn_and_pane(folder):
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("aot_eager")
    static = engine.load(str(folder))
    assert static.use_static_decode(compile_options={"backend": counter, "fullgraph": True}) is None
    assert static.info.compiled and counter.frame_count == 1  # compiled while warming up
    dynamic = engine.load(str(folder))
    assert _chat(static, "one") == _chat(dynamic, "one")
    assert _chat(static, "two", QUESTIONS[1:3]) == _chat(dynamic, "two", QUESTIONS[1:3])
    assert _turn(static, [engine.Message("user", "Back to one?")], "one")[1] == _turn(
        dynamic, [engine.Message("user", "Back to one?")], "one")[1]
    assert counter.frame_count == 1  # no recompilation for other lengths, positions or panes

    # A compiler failure after load: that step and the rest run eagerly, and the info says so.
    def broken(*args):
        raise RuntimeError("compiled code went away")

    static._static._step = broken
    history = [engine.Message("user", "Still there?")]
    assert _turn(static, history, "three")[1] == _turn(dynamic, history, "three")[1]
    assert not static.info.compiled and "compiled code went away" in static.info.compile_note


def test_cancel_mid_stream_then_the_next_turn_continues(folder):
    static = _static(folder)
    cancel = threading.Event()
    history = [engine.Message("user", "Tell me everything.")]
    long_answer = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=200)
    stream = static.stream(history, long_answer, cancel=cancel, cache_key="pane")
    received = []
    for chunk in stream:
        received.append(chunk)
        cancel.set()
    assert stream.stats.stop_reason == "cancelled" and 1 <= stream.stats.new_tokens < 200
    history += [engine.Message("assistant", "".join(received)), engine.Message("user", "Go on.")]
    text, ids, stats = _turn(static, history)
    assert stats.reused_tokens > 0
    assert ids == _turn(engine.load(str(folder), prefix_cache=False), history)[1]


def test_a_failed_generation_leaves_nothing_resident(folder, monkeypatch):
    static, dynamic = _static(folder), engine.load(str(folder), prefix_cache=False)
    history = [engine.Message("user", "Hello?")]
    _turn(static, history)

    def broken(model, job, stream, started):
        job.steps.prefill(job.embeds)  # half a turn written into the static cache, then a crash
        raise RuntimeError("boom")

    monkeypatch.setattr(batch_module, "run_decode", broken)
    with pytest.raises(engine.GenerationError):
        _turn(static, history)
    monkeypatch.undo()
    text, ids, stats = _turn(static, history)
    assert stats.reused_tokens == 0 and ids == _turn(dynamic, history)[1]


def test_a_prompt_that_nearly_fills_the_context_window(towers):
    folder = towers
    history = [engine.Message("user", "How long can this be?", images=[_picture(3)])]
    prompt = len(engine.load(str(folder)).prepare(history).input_ids)
    settings = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=50)
    for room in (1, 3):  # the answer is cut to what the window has left; the last position is the window's last
        static = _static(folder, context_length=prompt + room)
        dynamic = engine.load(str(folder), context_length=prompt + room)
        assert static._static.max_len == prompt + room
        _, ids, stats = _turn(static, history, settings=settings)
        assert stats.new_tokens == room and stats.stop_reason == "length"
        assert ids == _turn(dynamic, history, settings=settings)[1]
        assert static._static.length == prompt + room - 1


def test_compile_on_the_cpu_falls_back_with_a_note(folder):
    events = []
    eng = engine.load(str(folder), compile=True, progress=events.append)
    assert not eng.info.compiled and eng.info.compile_note == "needs CUDA"
    assert "compile: not used (needs CUDA)" in events[-1].message
    assert eng._static is None  # the growing-cache path, as without compile
    assert _chat(eng, turns=QUESTIONS[:2]) == _chat(engine.load(str(folder)), turns=QUESTIONS[:2])


def test_a_compiler_failure_while_warming_up_falls_back_to_eager(folder):
    def failing_backend(graph, example_inputs):
        raise RuntimeError("no compiler here")

    eng = engine.load(str(folder))
    note = eng.use_static_decode(compile_options={"backend": failing_backend, "fullgraph": True})
    assert note.startswith("torch.compile failed while warming up") and "no compiler here" in note
    assert "\n" not in note and eng._static is None and not eng.info.compiled
    assert _chat(eng, turns=QUESTIONS[:2]) == _chat(engine.load(str(folder)), turns=QUESTIONS[:2])


def test_warm_up_reports_progress_as_its_own_stage(folder):
    events = []
    eng = engine.load(str(folder))
    eng.use_static_decode(progress=events.append)
    stages = [(e.stage, e.done, e.total) for e in events]
    assert stages[0] == ("compile", 0, 3) and stages[-1] == ("compile", 3, 3)
    assert torch.is_tensor(eng._static.cache.layers[0].keys)  # allocated during load, not at the first turn


def test_a_dropped_engine_frees_its_static_cache_and_thread(folder):
    import gc
    import weakref

    eng = _static(folder)
    _turn(eng, [engine.Message("user", "Hello?")])
    dropped, thread = weakref.ref(eng), eng._static.worker._thread
    del eng  # as when /model loads another one
    gc.collect()
    thread.join(5)
    assert dropped() is None and not thread.is_alive()
