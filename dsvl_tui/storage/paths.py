"""Where the app keeps its files (XDG-style, per platform via platformdirs).

``DSVL_DATA_DIR`` and ``DSVL_CONFIG_DIR`` override the locations (tests use
them to stay inside a temporary folder). Nothing is created at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "dsvl-chat"
# The prompts typed at either front end, in prompt-toolkit's ``FileHistory``
# format: the plain REPL and the full-screen app read and append the same file.
HISTORY_FILE = "repl_history"


def data_dir() -> Path:
    """Autosaved conversations, the prompt history, default save location."""
    override = os.environ.get("DSVL_DATA_DIR")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_path

    return user_data_path(APP_NAME)


def config_dir() -> Path:
    """The config file (chosen theme and the like)."""
    override = os.environ.get("DSVL_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_config_path

    return user_config_path(APP_NAME)


def history_file() -> Path:
    """The prompt history shared by the REPL and the full-screen app."""
    return data_dir() / HISTORY_FILE
