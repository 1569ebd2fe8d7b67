"""Keep full garbage collections short while answers stream.

A full (generation 2) collection walks every object the collector tracks.
Once the app is up, most of them (Textual, rich, pygments and every module
they import, the model's modules) live as long as the process, yet each
full collection walks them again: about 60 ms, in the middle of a streaming
answer, every few hundred milliseconds as the answer's drawn lines pile up
(``python -m dsvl_tui.bench.ui`` on a 2-core CPU: with this, the worst frame
gap fell from about 135 ms to about 75 ms). ``settle()`` collects what is
garbage now, then moves everything still alive out of the collector's sight
(``gc.freeze()``): those objects are still freed by reference counting, and
later collections only walk what was made afterwards. ``release()`` hands
them back when the app ends, so cycles among them are collected after all
(the tests run many apps in one process).
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect, then exempt every surviving object from later collections (see the module docstring)."""
    gc.collect()
    gc.freeze()


def release() -> None:
    """Let the collector see the objects ``settle`` set aside again."""
    gc.unfreeze()
