"""Shared pytest set-up.

``cuda``-marked tests (``tests/test_cuda_*.py``) need a CUDA GPU: without
one they are skipped with the reason. ``python -m dsvl_tui.bench.gpucheck`` runs
them on a GPU; its ``--dry-run`` sets ``DSVL_CUDA_TESTS_ON_CPU=1`` so they
run on the CPU against the tiny checkpoint instead, which shows they work
before any GPU is lent.
"""

from __future__ import annotations

import os

import pytest

CUDA_TESTS_ON_CPU = "DSVL_CUDA_TESTS_ON_CPU"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda_items = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not cuda_items or os.environ.get(CUDA_TESTS_ON_CPU) == "1":
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False); "
                                   "`python -m dsvl_tui.bench.gpucheck` runs these on one")
    for item in cuda_items:
        item.add_marker(skip)
