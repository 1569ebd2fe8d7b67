"""The batched decode step's linear layers on the CPU (``model.FewRowsLinear``): oneDNN for several rows, only there.

Why: PyTorch's MKL float32 matmul of 2-16 rows cost 3-10 times one row on the
CPU, which left 8 batched streams at 1.2-1.3x one stream's throughput. The
batch's δ bound itself is kept by tests/engine/test_batch.py; here: which
path each forward takes, and that one stream alone is unchanged bit for bit.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

import engine
from engine.model import FewRowsLinear, rows_batched

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
GREEDY = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=12, ignore_eos=True)
ONEDNN = "mkldnn::_linear_pointwise"
WAIT = 120.0  # seconds a condition may take on a busy machine


def _ops(run) -> list[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return [event.key for event in prof.key_averages()]


def test_the_float32_cpu_language_model_loads_with_few_rows_linears(tiny_engine):
    linears = [m for m in tiny_engine.model.language_model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is FewRowsLinear for m in linears)
    # The vision tower is left as it was.
    assert not any(isinstance(m, FewRowsLinear) for m in tiny_engine.model.vision_model.modules())


def test_several_rows_run_on_onednn_only_inside_rows_batched_and_agree_with_mkl():
    torch.manual_seed(0)
    layer = nn.Linear(64, 48)
    reference = layer(x := torch.randn(8, 1, 64)).detach()
    one_row_reference = layer(x[:1]).detach()
    layer.__class__ = FewRowsLinear
    with torch.inference_mode():
        outside = layer(x)
        assert torch.equal(outside, reference)  # bit for bit: MKL's path
        assert ONEDNN not in _ops(lambda: layer(x))
        with rows_batched():
            inside = layer(x)
            assert ONEDNN in _ops(lambda: layer(x))
            one_row = layer(x[:1])  # one row keeps MKL's path, batched or not
            assert ONEDNN not in _ops(lambda: layer(x[:1]))
        assert torch.equal(one_row, one_row_reference)
    assert inside.shape == reference.shape
    torch.testing.assert_close(inside, reference, rtol=1e-5, atol=1e-5)


def test_rows_batched_is_per_thread_and_restored():
    seen = []
    with rows_batched():
        thread = threading.Thread(target=lambda: seen.append(_on()))
        thread.start()
        thread.join()
        seen.append(_on())
    seen.append(_on())
    assert seen == [False, True, False]


def _on() -> bool:
    from engine import model

    return bool(getattr(model._ROWS, "on", False))


def _calls(eng) -> list[tuple[int, int, bool]]:
    """(sequences, positions, inside rows_batched) of every call of the first query projection (an observer)."""
    calls: list[tuple[int, int, bool]] = []
    eng.model.language_model.model.layers[0].self_attn.q_proj.register_forward_pre_hook(
        lambda module, args: calls.append((args[0].shape[0], args[0].shape[1], _on())))
    return calls


def test_the_batch_decodes_and_prefills_inside_rows_batched_and_one_stream_alone_does_not(tiny_siglip):
    batched = engine.load(str(tiny_siglip), device="cpu", max_batch=4)
    alone = engine.load(str(tiny_siglip), device="cpu")
    in_batch, by_itself = _calls(batched), _calls(alone)
    chats = [[engine.Message("user", f"Question {n}: say something.")] for n in range(3)]
    streams = [batched.stream(chat, GREEDY) for chat in chats]
    readers = [threading.Thread(target=list, args=(stream,), daemon=True) for stream in streams]
    with batched._lock:  # every request waits in the scheduler before its first step: they are decoded together
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + WAIT
        while batched.batch_counts()[1] < len(streams):
            assert time.monotonic() < deadline, "the requests did not reach the scheduler"
            time.sleep(0.005)
    for reader in readers:
        reader.join(WAIT)
        assert not reader.is_alive(), "a stream did not end"
    list(alone.stream(chats[0], GREEDY))
    assert any(sequences > 1 and on for sequences, _, on in in_batch)  # decode steps of several sequences
    assert any(sequences == 1 and positions > 1 and on for sequences, positions, on in in_batch)  # prefill
    assert by_itself and not any(on for _, _, on in by_itself)
