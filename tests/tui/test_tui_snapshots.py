"""Snapshots of the main screen at 80x24 and 120x40 (pytest-textual-snapshot).

The scene is fixed: a scripted engine with a fixed model name, device and
speed; a conversation with an image (drawn here, always the same), a
markdown answer with a code block and fixed stats. Update with
``pytest tests/tui/test_tui_snapshots.py --snapshot-update`` after a deliberate change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from tui_support import FIXED_INFO, ScriptedEngine, scripted_loader, wait_for

from dsvl_tui.core.conversation import Attachment, ChatMessage, Conversation
from dsvl_tui.core.options import Options
from dsvl_tui.tui.app import DsvlApp
from dsvl_tui.tui.widgets import ImagePreview
from engine.types import GenerationStats

ANSWER = """The picture shows a **red boat** on a calm lake.

- hills behind it
- a clear sky

```python
def boat(colour="red"):
    return f"a {colour} boat"
```
"""


def _scene(tmp_path: Path) -> DsvlApp:
    image = Image.new("RGB", (48, 32), (40, 90, 200))
    for x in range(12, 36):
        for y in range(18, 26):
            image.putpixel((x, y), (210, 40, 40))
    path = tmp_path / "lake.png"
    image.save(path)
    stats = GenerationStats(prompt_tokens=620, new_tokens=58, time_to_first_token=0.21, tokens_per_second=38.5,
                            stop_reason="eos")
    conversation = Conversation(title="What is in the picture?", model=FIXED_INFO.model_id, messages=[
        ChatMessage("user", "What is in the picture?", images=[Attachment.from_path(path)]),
        ChatMessage("assistant", ANSWER, stats=stats),
    ])
    app = DsvlApp(Options(model=FIXED_INFO.model_id), loader=scripted_loader(ScriptedEngine()))
    app.stats[conversation.id] = stats  # the last answer of this conversation
    app.scene = conversation
    return app


async def _settle(pilot) -> None:
    app = pilot.app
    app.open_conversation(app.scene)

    def settled() -> bool:
        previews = app.query(ImagePreview)
        return app.engine is not None and bool(previews) and all(p.has_cells for p in previews) and \
            app.status.context_used is not None

    await wait_for(pilot, settled, timeout=120)  # a busy machine takes its time; the picture must not differ
    app.prompt.cursor_blink = False
    await pilot.wait_for_scheduled_animations()


@pytest.mark.slow
@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_main_screen(snap_compare, tmp_path, size):
    assert snap_compare(_scene(tmp_path), terminal_size=size, run_before=_settle)
