"""The UI bench's start-up child: ``dsvl-chat ARGS`` with a loader that records when the model load starts.

``python -m dsvl_tui.bench.startup_child RECORD ARGS...`` runs ``cli.main(ARGS)`` (the console script's
own entry point, so start-up is measured as a user meets it) with ``loader``: it appends ``load-start
<time.monotonic()>`` to RECORD and then calls ``engine.load``. ``bench.ui.first_frame`` launches it in a
pseudo-terminal. An entry point of its own, like the console script: no other module imports it, and
it is the only module besides that script that imports ``cli``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any


def recording_loader(record: Path) -> Any:
    """``engine.load``, after appending ``load-start <time.monotonic()>`` to ``record``."""
    def load(*args: Any, **kwargs: Any) -> Any:
        with open(record, "a", encoding="utf-8") as file:
            file.write(f"load-start {time.monotonic():.6f}\n")
        import engine

        return engine.load(*args, **kwargs)

    return load


def main(argv: list[str]) -> None:
    from dsvl_tui import cli

    cli.main(argv[1:], loader=recording_loader(Path(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
