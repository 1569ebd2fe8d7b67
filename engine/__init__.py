"""The DeepSeek-VL engine: load the original checkpoints and stream answers.

Importing this package is cheap; torch and transformers load with the
first use of ``load`` or ``Engine``.

    import engine
    eng = engine.load("deepseek-ai/deepseek-vl-1.3b-chat")
    for chunk in eng.stream([engine.Message("user", "hi")], engine.GenerationSettings()):
        print(chunk, end="")
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .errors import (
    CheckpointError,
    ContextOverflowError,
    EngineError,
    GenerationError,
    ImageError,
    LibraryMismatchError,
    ModelNotFoundError,
)
from .types import (
    ChatBackend,
    EncodedImage,
    EngineInfo,
    GenerationSettings,
    GenerationStats,
    LoadProgress,
    Message,
    Prepared,
)

if TYPE_CHECKING:  # pragma: no cover
    from .batch import default_max_batch
    from .decode import synchronize
    from .engine import Engine, load
    from .stream import TextStream

# transformers imports torchao (a dependency, for --quantize on CUDA) whenever it is installed, and torchao 0.18
# registers Enum types with torch's pytree, which torch logs as a deprecation warning: two lines on stderr at every
# start of every command. Only that logger, only below errors.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

# The public names that need torch, imported on first use.
_LAZY = {"Engine": "engine", "load": "engine", "default_max_batch": "batch", "TextStream": "stream",
         "synchronize": "decode"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        from .errors import checked_imports

        with checked_imports():  # the first import of timm and transformers, which import torchvision
            module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = [
    "ChatBackend", "CheckpointError", "ContextOverflowError", "EncodedImage", "Engine", "EngineError", "EngineInfo",
    "GenerationError", "GenerationSettings", "GenerationStats", "ImageError", "LibraryMismatchError", "LoadProgress",
    "Message", "ModelNotFoundError", "Prepared", "TextStream", "default_max_batch", "load", "synchronize",
]
