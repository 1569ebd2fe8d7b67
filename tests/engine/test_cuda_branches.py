"""Every place that behaves differently on CUDA, its decision tested on the CPU with a faked device.

What these fake: ``torch.cuda``'s availability, device count, compute
capability, free memory and the like, and torch.compile's prerequisites
(dynamo, triton). What only a GPU can show (kernels, CUDA graphs, real
memory, numerics) is in ``test_cuda_gpu.py``, marked ``cuda``, and run by
``python -m dsvl_tui.bench.gpucheck``.
"""

from __future__ import annotations

import importlib.util
import threading
import types

import pytest
import torch

import engine
import engine.static_decode as static_decode
from engine.decode import run_decode as fresh_run_decode
from engine.errors import EngineError
from engine.resolve import pick_device, pick_dtype

GIB = 2**30
CUDA = torch.device("cuda", 0)


@pytest.fixture
def folder(tiny_siglip):
    return tiny_siglip


class FakeCuda:
    """A CUDA machine as far as the engine's probes can tell; attributes say what each probe answers."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.available = True
        self.count = 2
        self.capability: tuple[int, int] | Exception = (9, 0)  # an H100/H200
        self.free = 80 * GIB
        self.dynamo = True
        self.triton_package = True
        self.triton_works = True
        self.current = 0
        self.calls: list[tuple[str, object]] = []
        real_find_spec = importlib.util.find_spec

        def capability(device=None):
            self.calls.append(("capability", device))
            if isinstance(self.capability, Exception):
                raise self.capability
            return self.capability

        def find_spec(name, *args, **kwargs):
            if name == "triton":
                return types.SimpleNamespace(name="triton") if self.triton_package else None
            return real_find_spec(name, *args, **kwargs)

        import torch._dynamo
        import torch.utils._triton

        monkeypatch.setattr(torch.cuda, "is_available", lambda: self.available)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (self.free, 141 * GIB))
        monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: self.dynamo)
        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        monkeypatch.setattr(torch.utils._triton, "has_triton", lambda: self.triton_works)
        for name in ("synchronize", "empty_cache", "reset_peak_memory_stats"):
            monkeypatch.setattr(torch.cuda, name, self._recorder(name))
        monkeypatch.setattr(torch.cuda, "max_memory_allocated",
                            lambda device=None: self._record("max_memory_allocated", device) or 3 * GIB)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)

    def _record(self, name, device):
        self.calls.append((name, device))

    def _recorder(self, name):
        return lambda device=None: self._record(name, device)


@pytest.fixture
def cuda(monkeypatch) -> FakeCuda:
    return FakeCuda(monkeypatch)


# -- 1. may we compile here, and if not why ------------------------------------------------------------------

def test_compile_is_tried_on_a_capable_cuda_gpu(cuda):
    assert static_decode.compile_unsupported(CUDA, cache_bytes=GIB) is None
    assert ("capability", CUDA) in cuda.calls  # the chosen GPU's capability, not the current one's


@pytest.mark.parametrize(("change", "expected"), [
    ({"capability": (6, 1)}, "needs a GPU of compute capability 7.0 or newer, this one has 6.1"),
    ({"available": False}, "needs CUDA, and no CUDA GPU is available"),
    ({"dynamo": False}, "torch.compile does not support this Python or platform"),
    ({"triton_package": False}, "needs triton, which this torch install lacks"),
    ({"triton_works": False}, "triton is installed but cannot build kernels for this GPU"),
    ({"free": GIB}, "not enough free GPU memory for a static KV cache of 0.75 GiB (1.00 GiB free)"),
    ({"capability": RuntimeError("CUDA driver initialization failed,\n you might not have a CUDA gpu.")},
     "could not check for CUDA/torch.compile support (RuntimeError: CUDA driver initialization failed, you might"),
])
def test_each_reason_not_to_compile_is_a_one_line_note(cuda, change, expected):
    for name, value in change.items():
        setattr(cuda, name, value)
    note = static_decode.compile_unsupported(CUDA, cache_bytes=3 * GIB // 4)
    assert note is not None and note.startswith(expected) and "\n" not in note


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_compile_needs_cuda(cuda, device):
    assert static_decode.compile_unsupported(torch.device(device)) == "needs CUDA"


def test_a_probe_that_raises_anything_is_a_note(cuda, monkeypatch):
    def broken():
        raise ImportError("triton/_C/libtriton.so: undefined symbol")

    monkeypatch.setattr(torch.utils._triton, "has_triton", broken)
    note = static_decode.compile_unsupported(CUDA)
    assert note.startswith("could not check for CUDA/torch.compile support (ImportError: triton/_C/libtriton.so")


def test_torchdynamo_disable_is_a_reason(cuda, monkeypatch):
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "disable", True)
    assert static_decode.compile_unsupported(CUDA) == "torch.compile is disabled (TORCHDYNAMO_DISABLE is set)"


def test_static_cache_size_is_what_warm_up_allocates(folder):
    eng = engine.load(str(folder), context_length=96)
    assert eng.use_static_decode() is None
    config = eng.model.language_model.config
    assert eng._static.nbytes() == static_decode.static_cache_bytes(config, 96, torch.float32) > 0
    # The full-size models at the default 4096-token window (the README's 0.8 GB and 2 GB).
    full_13b = types.SimpleNamespace(num_attention_heads=16, num_key_value_heads=16, hidden_size=2048,
                                     num_hidden_layers=24)
    full_7b = types.SimpleNamespace(num_attention_heads=32, hidden_size=4096, num_hidden_layers=30)
    assert static_decode.static_cache_bytes(full_13b, 4096, torch.bfloat16) == 768 * 2**20
    assert static_decode.static_cache_bytes(full_7b, 4096, torch.bfloat16) == 1920 * 2**20


def test_load_asks_the_decision_with_the_cache_size_and_compiles_when_it_says_yes(folder, monkeypatch):
    asked = []

    def allow(device, cache_bytes=0):
        asked.append((device, cache_bytes))
        return None

    # The CUDA options swapped for a CPU backend: the same load path, traced by torch.compile here.
    monkeypatch.setattr(static_decode, "compile_unsupported", allow)
    monkeypatch.setattr(static_decode, "CUDA_COMPILE_OPTIONS", {"backend": "aot_eager", "fullgraph": True})
    events = []
    eng = engine.load(str(folder), compile=True, context_length=64, progress=events.append)
    assert asked == [(torch.device("cpu"),
                      static_decode.static_cache_bytes(eng.model.language_model.config, 64, torch.float32))]
    assert eng.info.compiled and eng.info.compile_note is None and eng._static is not None
    assert events[-1].message.endswith("; compiled decode")


def test_load_with_compile_never_raises_for_a_broken_probe(folder, monkeypatch):
    def broken(device):
        raise RuntimeError("CUDA error: unspecified launch failure")

    # On the CPU the decision stops at "needs CUDA"; pretend the device is a GPU whose probes fail.
    monkeypatch.setattr(static_decode, "_compile_unsupported", lambda device, cache_bytes: broken(device))
    eng = engine.load(str(folder), compile=True, context_length=256)
    assert not eng.info.compiled and eng._static is None
    assert eng.info.compile_note == ("could not check for CUDA/torch.compile support "
                                     "(RuntimeError: CUDA error: unspecified launch failure)")
    stream = eng.stream([engine.Message("user", "Still fine?")],
                        engine.GenerationSettings(temperature=0, max_new_tokens=3))
    assert "".join(stream) is not None and stream.stats.new_tokens == 3


# -- 2. device and dtype choice ----------------------------------------------------------------------------------

def test_auto_and_plain_cuda_pick_the_current_gpu_with_its_index(cuda):
    cuda.current = 1
    assert pick_device("auto") == pick_device("cuda") == torch.device("cuda", 1)
    assert pick_device("cuda:0") == torch.device("cuda", 0)


@pytest.mark.parametrize(("count", "asked", "expected"), [
    (2, "cuda:2", "cuda:2 was asked for but this machine has 2 CUDA GPUs (cuda:0 to cuda:1); pick one of those"),
    (1, "cuda:1", "cuda:1 was asked for but this machine has 1 CUDA GPU (cuda:0); pick one of those"),
])
def test_a_gpu_index_that_does_not_exist_is_a_one_line_error(cuda, count, asked, expected):
    cuda.count = count
    with pytest.raises(EngineError) as error:
        pick_device(asked)
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)


def test_cuda_asked_for_without_a_gpu(cuda):
    cuda.available = False
    with pytest.raises(EngineError, match="no CUDA GPU is available; use --device auto or cpu"):
        pick_device("cuda")
    assert pick_device("auto").type in ("cpu", "mps")


@pytest.mark.parametrize(("capability", "expected"), [
    ((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16), ((8, 6), torch.bfloat16),  # H100, A100, RTX 30xx
    ((7, 5), torch.float16), ((7, 0), torch.float16), ((6, 1), torch.float16),  # T4, V100, P40: bf16 only emulated
])
def test_auto_dtype_by_the_chosen_gpus_capability(cuda, monkeypatch, capability, expected):
    cuda.capability = capability
    # torch's own check says yes to emulated bf16 and asks about the current GPU; the engine must not rely on it.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.version, "hip", None)
    device = torch.device("cuda", 1)
    assert pick_dtype("auto", device) == expected
    assert cuda.calls[-1] == ("capability", device)
    assert pick_dtype("float32", device) == torch.float32  # an explicit choice stands


def test_auto_dtype_on_rocm_is_bf16(cuda, monkeypatch):
    cuda.capability = (9, 4)  # ROCm reports its own numbering; every supported AMD GPU does bf16
    monkeypatch.setattr(torch.version, "hip", "6.2")
    assert pick_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16


# -- 2. out of memory: handling and recovery ---------------------------------------------------------------------

GREEDY = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=6)
TORCH_OOM = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB\n"
             "of which 1.2 GiB is free. Including non-PyTorch memory, this process has 78.0 GiB in use.")


def _answer(eng, history, key="pane"):
    stream = eng.stream(history, GREEDY, cache_key=key)
    text = "".join(stream)
    return text, stream.token_ids, stream.stats


def test_out_of_memory_while_generating_frees_the_turn_then_the_next_one_works(folder, monkeypatch):
    import weakref

    import engine.batch as batch_module

    eng, fresh = engine.load(str(folder), context_length=256), engine.load(str(folder), context_length=256)
    history = [engine.Message("user", "Hello there?")]
    text, _, _ = _answer(eng, history)
    history += [engine.Message("assistant", text), engine.Message("user", "And then?")]
    held: list[weakref.ref] = []
    emptied: list[bool] = []  # per torch.cuda.empty_cache() call: was the failed turn's memory unreferenced by then?

    def exhausted(model, job, stream, started):
        activations = torch.zeros(256, 1024)  # stands for what the failed turn had allocated
        held.append(weakref.ref(activations))
        with torch.inference_mode():
            job.steps.prefill(job.embeds)  # half a turn written into its cache
        raise torch.OutOfMemoryError(TORCH_OOM)

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(held[0]() is None))
    monkeypatch.setattr(batch_module, "run_decode", exhausted)
    with pytest.raises(engine.GenerationError) as error:
        _answer(eng, history)
    assert str(error.value) == ("out of GPU memory while generating; start a new conversation, shorten it, "
                                "or load a smaller model")
    assert emptied == [True]  # torch's cache emptied once, after the failed turn's tensors were freed
    monkeypatch.setattr(batch_module, "run_decode", fresh_run_decode)
    _, ids, stats = _answer(eng, history)
    assert stats.stop_reason == "length" and stats.reused_tokens == 0  # the failed turn's context was dropped
    assert ids == _answer(fresh, history)[1]


def test_out_of_memory_while_loading_is_a_one_line_engine_error(folder, monkeypatch):
    import engine.engine as engine_module

    def too_big(*args, **kwargs):
        raise torch.OutOfMemoryError(TORCH_OOM)

    monkeypatch.setattr(engine_module, "build_model", too_big)
    with pytest.raises(EngineError) as error:
        engine.load(str(folder))
    assert str(error.value) == (f"not enough memory to load {folder} on cpu in float32; free the GPU, pick a smaller "
                                "model, or use --device cpu")


def test_out_of_memory_for_the_static_cache_is_a_note_and_decoding_stays_eager(folder, monkeypatch):
    def too_big(self, progress=None):
        raise torch.OutOfMemoryError(TORCH_OOM)

    monkeypatch.setattr(static_decode.StaticDecoder, "warm_up", too_big)
    eng = engine.load(str(folder), context_length=256)
    assert eng.use_static_decode() == "not enough GPU memory for a static KV cache of 256 tokens"
    assert eng._static is None and not eng.info.compiled
    assert _answer(eng, [engine.Message("user", "Hi?")])[2].new_tokens == GREEDY.max_new_tokens


def test_out_of_memory_in_the_compiled_step_is_not_taken_for_a_compiler_failure(folder):
    eng = engine.load(str(folder), context_length=256)
    assert eng.use_static_decode(compile_options={"backend": "aot_eager", "fullgraph": True}) is None
    compiled_step = eng._static._step

    def exhausted(*args):
        raise torch.OutOfMemoryError(TORCH_OOM)

    eng._static._step = exhausted
    history = [engine.Message("user", "Hi?")]
    with pytest.raises(engine.GenerationError, match="^out of GPU memory while generating"):
        _answer(eng, history)
    # Still compiled: running out of memory says nothing about the compiler, and the next turn uses it again.
    assert eng.info.compiled and eng._static.compiled and eng._static.note is None
    eng._static._step = compiled_step
    assert _answer(eng, history)[1] == _answer(engine.load(str(folder), context_length=256), history)[1]


# -- 2. timings, the CUDA-graph thread rule ----------------------------------------------------------------------

def test_synchronize_waits_for_the_engines_gpu_not_the_current_one(cuda):
    from engine.decode import synchronize

    synchronize("cuda:1")
    synchronize(torch.device("cpu"))
    assert [call for call in cuda.calls if call[0] == "synchronize"] == [("synchronize", torch.device("cuda", 1))]


def test_every_static_decode_step_runs_on_the_one_worker_thread(folder, monkeypatch):
    # torch keeps recorded CUDA graphs per thread: warm-up and every turn of every pane must share one thread.
    threads: list[threading.Thread] = []
    real_step = static_decode.decode_one_token

    def recording_step(*args):
        threads.append(threading.current_thread())
        return real_step(*args)

    monkeypatch.setattr(static_decode, "decode_one_token", recording_step)
    eng = engine.load(str(folder), context_length=256)
    assert eng.use_static_decode() is None
    warm_up = len(threads)
    for pane in ("a", "b", "a"):
        _answer(eng, [engine.Message("user", f"Pane {pane}?")], key=pane)
    assert warm_up == static_decode.WARM_UP_STEPS and len(threads) > warm_up
    assert set(threads) == {eng._static.worker._thread} and threads[0] is not threading.current_thread()


# -- 2. memory reporting -----------------------------------------------------------------------------------------

def test_peak_memory_is_read_from_the_engines_gpu(cuda):
    from dsvl_tui.bench.engine import peak_memory, reset_peak_memory

    reset_peak_memory("cuda:1")
    assert peak_memory("cuda:1") == 3 * GIB
    assert peak_memory("cpu") == 0  # the bench reports RSS there instead
    reset_peak_memory("cpu")
    assert [c for c in cuda.calls if c[0] != "capability"] == [("reset_peak_memory_stats", "cuda:1"),
                                                                 ("max_memory_allocated", "cuda:1")]
