"""The typed settings the CLI builds once and passes to a front end.

Also the one default model (``DEFAULT_MODEL``) and the one list of the
generation settings a user sets (``user_settings()``): the fields of
``engine.GenerationSettings``, read from it, so the CLI options, ``ask``
and ``/set`` follow the engine. Importing this module imports no ``engine``
(the CLI's ``--help`` stays light); building ``Options`` does.
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.types import GenerationSettings

DEFAULT_MODEL = "deepseek-ai/deepseek-vl-1.3b-chat"
_NOT_FOR_USERS = ("ignore_eos",)  # benchmarks only


@functools.cache
def user_settings() -> dict[str, type]:
    """The settings a user sets (CLI options, ``ask``, ``/set``), in the engine's order, with their value types.

    ``{"temperature": float, ..., "seed": int}``: every field of ``GenerationSettings`` but the
    benchmarks' own, ``int | None`` read as ``int``.
    """
    from engine.types import GenerationSettings

    hints = typing.get_type_hints(GenerationSettings)
    return {f.name: _value_type(hints[f.name]) for f in fields(GenerationSettings) if f.name not in _NOT_FOR_USERS}


def resolvable_model(name: str) -> str:
    """``name`` in a form that means the same model from any folder: a local folder's absolute path.

    A model that names an existing folder (``ck``, ``~/models/vl``) becomes its absolute path, so a
    transcript that stores it can be continued from elsewhere; anything else (a hub id such as
    ``deepseek-ai/deepseek-vl-1.3b-chat``, a folder that is not there) is returned as is.
    """
    path = Path(name).expanduser()
    return str(path.resolve()) if name and path.is_dir() else name


def _value_type(annotation: object) -> type:
    """``int`` for ``int`` and for ``int | None``."""
    if isinstance(annotation, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    assert isinstance(annotation, type), annotation
    return annotation


def _default_settings() -> GenerationSettings:
    from engine.types import GenerationSettings

    return GenerationSettings()


@dataclass
class Options:
    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    revision: str | None = None
    compile: bool = False  # compiled decode on CUDA (the engine falls back to eager, with a note, elsewhere)
    quantize: str = "none"  # none, int8 or int4 language-model weights (the engine falls back, with a note)
    max_batch: int | None = None  # answers decoded together (None: the engine's default for the device)
    system: str | None = None  # None: the model's default system prompt
    settings: GenerationSettings = field(default_factory=_default_settings)
    theme: str | None = None  # None: the remembered one, else the default
    resume: bool = False  # open the list of recent conversations at start
    images: str = "halfblock"  # how image previews are drawn: halfblock, kitty or sixel (run_tui picks)
    endpoint: str | None = None  # an OpenAI-compatible server answers instead of a local engine
    api_key: str | None = field(default=None, repr=False)  # sent to the endpoint only, never stored
