"""The user's config file: choices the app remembers between runs (the theme).

``config_dir()/config.json`` holds one JSON object. Reading never fails (a
missing or broken file reads as empty); writing merges the new keys into what
is there and replaces the file atomically (temporary file, fsync, rename), so
a crash never leaves half a file behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dsvl_tui.storage.atomic import atomic_write_bytes
from dsvl_tui.storage.paths import config_dir
from engine.files import read_regular

CONFIG_NAME = "config.json"
MAX_CONFIG_BYTES = 1 << 20  # a few remembered choices; anything larger is not ours


def config_path() -> Path:
    return config_dir() / CONFIG_NAME


def load_config() -> dict[str, Any]:
    """The remembered settings; ``{}`` if there are none or the file is unreadable."""
    try:
        # A regular file of sane size only: a FIFO here would hang the app before its first frame.
        data = json.loads(read_regular(config_path(), MAX_CONFIG_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_config(**updates: Any) -> Path:
    """Merge ``updates`` into the config file (atomically); returns its path."""
    path = config_path()
    data = {**load_config(), **updates}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path
