"""Fixtures of the app's tests (tests/tui): its own tiny checkpoint, and a test's own current folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.testing.random_checkpoints import write_checkpoint


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's ``tmp_path`` as the current folder (its data and config folders: conftest's private_dirs)."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny chat checkpoint (seed 3) named like a chat model, once per module."""
    return write_checkpoint(tmp_path_factory.mktemp("tui") / "tiny-vl-chat", seed=3)
