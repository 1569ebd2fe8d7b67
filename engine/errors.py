"""Errors the engine raises.

Every error carries a one-line message that names the problem and what to do
about it, so a front end can show ``str(error)`` as is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class EngineError(Exception):
    """Base class for every error the engine raises on purpose."""


class ModelNotFoundError(EngineError):
    """The model id or folder cannot be found (not on disk, not cached while offline)."""


class CheckpointError(EngineError):
    """The folder exists but is not a usable DeepSeek-VL checkpoint."""


class ImageError(EngineError):
    """An attached image cannot be read or decoded."""


class ContextOverflowError(EngineError):
    """A single turn does not fit in the context window."""


class GenerationError(EngineError):
    """Generation failed in the worker thread (out of memory, a bug)."""


class LibraryMismatchError(EngineError):
    """torch and torchvision (which timm and transformers import) come from different builds."""


# The README's CPU recipe (Set-up) with --force-reinstall: pip keeps an installed torch otherwise.
REINSTALL_TORCH = "pip install --force-reinstall torch torchvision --index-url https://download.pytorch.org/whl/cpu"


def library_mismatch(exc: BaseException) -> LibraryMismatchError | None:
    """The one-line error for ``exc``, raised while importing the model code, when it shows that torch and
    torchvision come from different builds; None for any other failure.

    A torchvision built for another torch fails inside its own import, with only ``RuntimeError: operator
    torchvision::nms does not exist`` (or "compiled with different CUDA versions"), which names neither
    package's version nor the fix.
    """
    if not isinstance(exc, RuntimeError) or "torchvision" not in str(exc):
        return None
    import importlib.metadata
    import re
    import sys

    torch = sys.modules.get("torch")
    have = str(getattr(torch, "__version__", "")) or _version("torch")
    wants = ""
    try:
        for requirement in importlib.metadata.requires("torchvision") or []:
            pinned = re.fullmatch(r"torch\s*\(?\s*([^;)]+?)\s*\)?\s*(;.*)?", requirement)
            if pinned:
                wants = f" (made for torch{pinned.group(1).replace(' ', '')})"
    except importlib.metadata.PackageNotFoundError:
        pass
    cause = " ".join(str(exc).split())[:120]
    return LibraryMismatchError(
        f"torch {have or '(version unknown)'} and torchvision {_version('torchvision') or '(version unknown)'}{wants} "
        f"come from different builds ({cause}); reinstall both from one index: {REINSTALL_TORCH} "
        "(with a GPU, your CUDA version's index: see the README's Set-up)")


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


@contextmanager
def checked_imports() -> Iterator[None]:
    """Around an import of the model code: a torch/torchvision mismatch raises ``LibraryMismatchError``
    (the original error as its cause); anything else goes through as it was."""
    try:
        yield
    except RuntimeError as exc:
        mismatch = library_mismatch(exc)
        if mismatch is None:
            raise
        raise mismatch from exc
