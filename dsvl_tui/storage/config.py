"""The user's config file: choices the app remembers between runs (the theme).

``config_dir()/config.json`` holds one JSON object. Reading never fails: a
missing file reads as empty; an unreadable or broken file, or a value of the
wrong type for a key the app reads, is ignored and named in one note (the
``note`` callback), so a hand-edited file can never stop the app from
starting. Writing merges the new keys into what is there (the checked values:
a bad one is dropped then) and replaces the file atomically (temporary file,
fsync, rename), so a crash never leaves half a file behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsvl_tui.storage.atomic import atomic_write_bytes
from dsvl_tui.storage.paths import config_dir
from engine.files import read_regular

CONFIG_NAME = "config.json"
MAX_CONFIG_BYTES = 1 << 20  # a few remembered choices; anything larger is not ours
# Every key the app reads and the JSON type its value must have. A value of any other type is
# ignored, never handed on: `{"theme": ["x"]}` once crashed every start (a list is not hashable).
# Keys the app does not know are kept as they are (a newer version may have written them).
SCHEMA: dict[str, type] = {"theme": str}
_KINDS = {str: "text", bool: "true or false", int: "a whole number", float: "a number", list: "a list",
          dict: "an object", type(None): "null"}


def config_path() -> Path:
    return config_dir() / CONFIG_NAME


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def load_config(note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The remembered settings, each known key's value of its ``SCHEMA`` type; ``{}`` if there are none.

    What is ignored (an unreadable file, not JSON, a value of the wrong type) is
    reported in one line through ``note``; a missing file is not a problem.
    """
    path = config_path()
    try:
        # A regular file of sane size only: a FIFO here would hang the app before its first frame.
        data = json.loads(read_regular(path, MAX_CONFIG_BYTES).decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: [[[[... nested
        if note is not None:
            reason = "not valid JSON" if isinstance(exc, (ValueError, RecursionError)) else \
                getattr(exc, "strerror", None) or str(exc)
            note(f"ignored the config file {path} ({reason}); choosing a theme again rewrites it")
        return {}
    if not isinstance(data, dict):
        if note is not None:
            note(f"ignored the config file {path} (not a JSON object); choosing a theme again rewrites it")
        return {}
    bad = [key for key, kind in SCHEMA.items() if key in data and type(data[key]) is not kind]
    if bad and note is not None:
        named = ", ".join(f"{key!r} ({_kind(data[key])}, expected {_KINDS[SCHEMA[key]]})" for key in bad)
        note(f"ignored {named} in the config file {path}; choosing a theme again rewrites it")
    return {key: value for key, value in data.items() if key not in bad}


def save_config(**updates: Any) -> Path:
    """Merge ``updates`` into the config file (atomically); returns its path."""
    path = config_path()
    data = {**load_config(), **updates}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path
