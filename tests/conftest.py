"""Shared pytest set-up.

``cuda``-marked tests (``tests/engine/test_cuda_*.py``) need a CUDA GPU: without
one they are skipped with the reason. ``python -m dsvl_tui.bench.gpucheck`` runs
them on a GPU; its ``--dry-run`` sets ``DSVL_CUDA_TESTS_ON_CPU=1`` so they
run on the CPU against the tiny checkpoint instead, which shows they work
before any GPU is lent.

Shared fixtures:

- ``private_dirs`` (autouse): every test gets its own data and config
  folders (``DSVL_DATA_DIR``, ``DSVL_CONFIG_DIR`` under its ``tmp_path``), so
  no test reads or writes the user's real ones. Subprocesses inherit them.
- ``tiny_siglip``, ``tiny_hybrid``, ``tiny_checkpoints``: tiny checkpoints of
  both vision towers (random weights, seed ``TINY_SEED``), written once per
  run. They are shared by every module: copy one before changing it. A module
  that needs another seed, name or variant writes its own.
- ``tiny_engine``: ``tiny_siglip`` loaded on the CPU, once per module.
- ``web_mode``: the environment ``dsvl-chat web`` gives each tab's app.

Tests marked ``slow`` (they start another Python, or drive the whole app or
a bench for seconds) run by default; ``pytest -m "not slow"`` leaves them out for
a quick inner loop (CONTRIBUTING.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CUDA_TESTS_ON_CPU = "DSVL_CUDA_TESTS_ON_CPU"
TINY_SEED = 7


@dataclass(frozen=True)
class PrivateDirs:
    data: Path
    config: Path


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PrivateDirs:
    """The test's own data and config folders (not created: the app makes them when it writes)."""
    dirs = PrivateDirs(data=tmp_path / "data", config=tmp_path / "config")
    monkeypatch.setenv("DSVL_DATA_DIR", str(dirs.data))
    monkeypatch.setenv("DSVL_CONFIG_DIR", str(dirs.config))
    return dirs


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint with the 1.3B's SigLIP tower; shared: copy it before changing it."""
    from engine.testing.random_checkpoints import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("shared") / "tiny-siglip", tower="siglip", size="tiny",
                            seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_hybrid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint with the 7B's hybrid (SigLIP + SAM) tower; shared: copy it before changing it."""
    from engine.testing.random_checkpoints import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("shared") / "tiny-hybrid", tower="hybrid", size="tiny",
                            seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_siglip: Path, tiny_hybrid: Path) -> dict[str, Path]:
    """Both tiny checkpoints by tower name, for tests parametrized over ``("siglip", "hybrid")``."""
    return {"siglip": tiny_siglip, "hybrid": tiny_hybrid}


@pytest.fixture(scope="module")
def tiny_engine(tiny_siglip: Path) -> Any:
    """The tiny SigLIP checkpoint loaded on the CPU, once per module (the server's and its clients' tests)."""
    import engine

    return engine.load(str(tiny_siglip), device="cpu")


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


@pytest.fixture
def web_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment ``dsvl-chat web`` gives each tab's app."""
    folder = tmp_path / "web-uploads"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("DSVL_WEB", "1")
    monkeypatch.setenv("DSVL_WEB_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("DSVL_WEB_UPLOADS", str(folder))
