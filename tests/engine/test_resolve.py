"""Device/dtype choice and the download-progress adapter."""

from __future__ import annotations

import torch

from engine.checkpoint import LoadProgress
from engine.resolve import pick_device, pick_dtype, progress_tqdm


def test_auto_device_and_dtype_on_this_machine():
    device = pick_device("auto")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert device.type == expected
    if expected == "cpu":
        assert pick_dtype("auto", device) == torch.float32


def test_explicit_dtypes():
    cpu = torch.device("cpu")
    assert pick_dtype("bf16", cpu) == torch.bfloat16
    assert pick_dtype("float16", cpu) == torch.float16
    assert pick_dtype(torch.float32, cpu) == torch.float32
    assert pick_dtype("auto", torch.device("mps")) == torch.float16


def test_download_bytes_reach_the_progress_callback():
    events: list[LoadProgress] = []
    bar_class = progress_tqdm(events.append)
    bar = bar_class(total=1000, unit="B", desc="model.safetensors")
    bar.update(400)
    bar.update(600)
    bar.close()
    assert [(e.stage, e.done, e.total) for e in events] == [("download", 400, 1000), ("download", 1000, 1000)]
    assert "model.safetensors" in events[-1].message
    files = bar_class(total=3, unit="it")  # file-count bars are not byte progress
    files.update(1)
    assert len(events) == 2
