"""What only a GPU can show: numerics on CUDA, the compiled decode step, recompilation (marked ``cuda``).

Skipped without CUDA (see ``conftest.py``). ``python -m dsvl_tui.bench.gpucheck``
runs them on a GPU, against the tiny checkpoint and the full-size random
1.3B one (whose folder it passes in ``DSVL_GPUCHECK_FULL_CHECKPOINT``,
written once). Its ``--dry-run`` runs them on the CPU with the tiny
checkpoint only (``DSVL_CUDA_TESTS_ON_CPU=1``), the compiled step traced
with the ``aot_eager`` backend instead of CUDA graphs. Measured figures go
to the JSON file named by ``DSVL_GPUCHECK_REPORT``, for gpucheck's table.

Tolerances against the CPU fp32 result, on the logits of every position of
a prompt with an image (``rel``: the largest absolute difference over the
largest absolute CPU logit; ``cos``: the lowest per-position cosine
similarity; ``top1``: the share of positions whose highest logit is the
same token). fp32 allows for TF32 convolutions in the vision towers
(cuDNN's default) and a different summation order; bf16 for bf16 itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import engine
from engine.testing.random_checkpoints import write_checkpoint

pytestmark = pytest.mark.cuda

ON_CPU = os.environ.get("DSVL_CUDA_TESTS_ON_CPU") == "1"
DEVICE = "cpu" if ON_CPU else "cuda"
FULL_CHECKPOINT = os.environ.get("DSVL_GPUCHECK_FULL_CHECKPOINT")
REPORT = os.environ.get("DSVL_GPUCHECK_REPORT")
# Measured on the CPU (bf16 against fp32, same prompt): tiny rel 0.013, cos 0.99986, top1 0.99; the full-size
# 1.3B with 4 language-model layers rel 0.015, cos 0.99972, top1 0.96. The limits leave room for 24 layers and
# for GPU kernels; a real fault (a misplaced image, wrong positions, a broken kernel) gives cos far below 0.99.
TOLERANCES = {
    "float32": {"rel": 1e-2, "cos": 0.9999, "top1": 0.98},
    "bfloat16": {"rel": 1e-1, "cos": 0.995, "top1": 0.8},
}
_CPU_REFERENCE: dict[Path, torch.Tensor] = {}  # folder -> CPU fp32 logits (the full-size one takes seconds)
GREEDY = engine.GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=8, ignore_eos=True)


def _report(key: str, value) -> None:
    """Adds one measured figure to gpucheck's report file (when run by it)."""
    if not REPORT:
        return
    path = Path(REPORT)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=2))


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    if os.environ.get("DSVL_GPUCHECK_TINY_CHECKPOINT"):  # gpucheck's, written once
        return Path(os.environ["DSVL_GPUCHECK_TINY_CHECKPOINT"])
    return write_checkpoint(tmp_path_factory.mktemp("cuda-gpu") / "tiny", tower="siglip", seed=7)


@pytest.fixture(params=["tiny", "full"])
def checkpoint(request, tiny) -> tuple[str, Path]:
    if request.param == "tiny":
        return "tiny", tiny
    if ON_CPU:
        pytest.skip("the dry run uses only the tiny checkpoint")
    if FULL_CHECKPOINT:
        return "full", Path(FULL_CHECKPOINT)
    from dsvl_tui.bench.engine import random_checkpoint

    return "full", random_checkpoint(None)  # written once into the benchmark cache


def _compiled(folder: Path, dtype: str, **kwargs) -> engine.Engine:
    """The engine with the compiled decode step: CUDA graphs on a GPU, the aot_eager trace in the dry run."""
    if ON_CPU:
        eng = engine.load(str(folder), device="cpu", dtype=dtype, **kwargs)
        assert eng.use_static_decode(compile_options={"backend": "aot_eager", "fullgraph": True}) is None
        return eng
    eng = engine.load(str(folder), device=DEVICE, dtype=dtype, compile=True, **kwargs)
    assert eng.info.compiled, f"--compile was not used: {eng.info.compile_note}"
    return eng


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_logits_on_the_gpu_match_the_cpu_in_fp32(checkpoint, dtype):
    name, folder = checkpoint
    history = [engine.Message("user", "Describe this picture in detail, please.", images=[_picture(5)])]
    if folder not in _CPU_REFERENCE:
        reference = engine.load(str(folder), device="cpu", dtype="float32")
        _CPU_REFERENCE[folder] = reference.logits(reference.prepare(history))
        del reference
    want = _CPU_REFERENCE[folder]
    eng = engine.load(str(folder), device=DEVICE, dtype=dtype)
    got = eng.logits(eng.prepare(history)).cpu()
    rel = float((got - want).abs().max() / want.abs().max())
    cos = float(torch.nn.functional.cosine_similarity(got, want, dim=-1).min())
    top1 = float((got.argmax(-1) == want.argmax(-1)).float().mean())
    _report(f"logits_{name}_{dtype}", {"rel": rel, "cos": cos, "top1": top1, "positions": len(want)})
    limits = TOLERANCES[dtype]
    assert rel <= limits["rel"] and cos >= limits["cos"] and top1 >= limits["top1"], (rel, cos, top1)


def _chat(eng, conversations: dict[str, tuple[int, ...]], turns: int) -> dict[str, list[list[int]]]:
    """Greedy chats, one per key, their turns interleaved; each key's prompts lengthen by its own pattern."""
    histories: dict[str, list[engine.Message]] = {key: [] for key in conversations}
    answers: dict[str, list[list[int]]] = {key: [] for key in conversations}
    for turn in range(turns):
        for key, lengths in conversations.items():
            question = "Tell me more" + " and more" * lengths[turn % len(lengths)] + f" (turn {turn + 1})?"
            images = [_picture(turn)] if turn in (0, 4) else []
            histories[key].append(engine.Message("user", question, images=images))
            stream = eng.stream(histories[key], GREEDY, cache_key=key)
            histories[key].append(engine.Message("assistant", "".join(stream)))
            answers[key].append(stream.token_ids)
    return answers


def test_greedy_output_is_identical_eager_and_compiled(tiny):
    compiled = _compiled(tiny, "float32")
    eager = engine.load(str(tiny), device=DEVICE, dtype="float32")
    conversations = {"a": (1, 7, 3), "b": (4,)}
    got, want = _chat(compiled, conversations, 4), _chat(eager, conversations, 4)
    _report("greedy_eager_equals_compiled_tiny_fp32", got == want)
    assert got == want


def test_no_recompilation_across_turns_conversations_and_prompt_lengths(tiny):
    from torch._dynamo.utils import counters

    eng = _compiled(tiny, "float32")
    graphs_at_warm_up = counters["stats"]["unique_graphs"]
    assert graphs_at_warm_up >= 1  # the warm-up compiled the step (so the counter does count)
    recompiles_at_warm_up = sum(counters["recompiles"].values())
    # 8 turns of 3 conversations in one engine, interleaved (each switch moves the static cache's
    # resident out and the next one in), prompts of different lengths, images in turns 1 and 5.
    answers = _chat(eng, {"one": (1, 7, 3), "two": (5, 2), "three": (9,)}, 8)
    new_graphs = counters["stats"]["unique_graphs"] - graphs_at_warm_up
    recompiles = sum(counters["recompiles"].values()) - recompiles_at_warm_up
    _report("compiled_graphs_during_24_turns", {"new_graphs": new_graphs, "recompiles": recompiles,
                                                "graphs_at_warm_up": graphs_at_warm_up})
    assert all(len(ids) == GREEDY.max_new_tokens for chat in answers.values() for ids in chat)
    assert (new_graphs, recompiles) == (0, 0)
