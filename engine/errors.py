"""Errors the engine raises.

Every error carries a one-line message that names the problem and what to do
about it, so a front end can show ``str(error)`` as is.
"""

from __future__ import annotations


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
