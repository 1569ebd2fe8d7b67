"""What a thread reports after the app has shut down is dropped, not a crash (issue 20, section 7).

A model load, an answer or a context measurement runs in a thread and reports by message. Seen in
the suite: load progress or "loaded" handled after the app exited, failing on ``screen_stack[0]``.
"""

from __future__ import annotations

import pytest
from tui_support import ScriptedEngine, ready, run_async, scripted_app

from dsvl_tui.tui import workers as gen


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.mark.slow
@run_async
async def test_reports_arriving_after_exit_are_dropped():
    app = scripted_app(ScriptedEngine())
    async with app.run_test() as pilot:
        await ready(pilot)
        load_id = app._load_id
        conversation = app.active.conversation
    assert not app.screen_stack  # the app is gone: nothing to show a report on

    reports = [
        gen.ModelProgress(load_id, "download", 1, 2, "downloading"),
        gen.ModelLoaded(load_id, ScriptedEngine()),
        gen.ModelFailed(load_id, "boom"),
        gen.ContextMeasured(conversation, 12),
    ]
    handlers = [app.on_model_progress, app.on_model_loaded, app.on_model_failed, app.on_context_measured]
    for handler, report in zip(handlers, reports, strict=True):
        await handler(report)  # raised IndexError (screen_stack[0]) before


@pytest.mark.slow
@run_async
async def test_reports_arriving_while_the_app_shuts_down_are_dropped():
    """Shutting down, Textual removes the screen's widgets before the screen: a report handled then finds no
    status bar (seen in the suite: ``NoMatches: '#status'`` from a model loaded as a test's app ended)."""
    from textual.css.query import NoMatches

    from dsvl_tui.backends.remote_probe import Connection

    app = scripted_app(ScriptedEngine())
    async with app.run_test() as pilot:
        await ready(pilot)
        await app.status.remove()
        with pytest.raises(NoMatches):  # while the app runs, a missing widget is a bug and not hidden
            await app.on_model_loaded(gen.ModelLoaded(app._load_id, ScriptedEngine()))
        app._running = False  # what App._shutdown sets first
        try:
            await app.on_model_loaded(gen.ModelLoaded(app._load_id, ScriptedEngine()))
            await app.on_connection_changed(gen.ConnectionChanged(app._load_id, Connection(True)))
        finally:
            app._running = True
