"""The answer so far is journaled as it streams (``tui.answering``; moved from ``test_tui.py``, where the test
patched the constant in ``tui.app`` before the answering had a module of its own)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tui_support import ScriptedEngine, ready, run_async, scripted_app, type_line, wait_for


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):  # data and config folders: conftest's private_dirs
    monkeypatch.chdir(tmp_path)


def _journaled(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "data" / "journal").glob("*.json"))]


@run_async
async def test_a_streaming_answer_is_journaled_as_it_grows(tmp_path, monkeypatch):
    from dsvl_tui.tui import answering

    monkeypatch.setattr(answering, "PARTIAL_SAVE_SECONDS", 0.0)
    backend = ScriptedEngine(["Half", " and", " the rest"], hold_after=2)
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "question")

        def journaled_so_far() -> bool:
            entries = _journaled(tmp_path)
            return bool(entries) and entries[0]["messages"][-1]["text"] == "Half and"

        await wait_for(pilot, journaled_so_far)  # while the answer is held half way: what kill -9 would keep
        assert _journaled(tmp_path)[0]["messages"][-1]["stopped"]
        backend.gate.set()
        await wait_for(pilot, lambda: app.queue.for_pane(app.active) is None)
        await wait_for(pilot, lambda: not _journaled(tmp_path)[0]["messages"][-1]["stopped"])
    assert _journaled(tmp_path)[0]["messages"][-1]["text"] == "Half and the rest"
