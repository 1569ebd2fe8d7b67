"""The config file: a value of the wrong type (or a broken file) is ignored with one note, never a crash."""

from __future__ import annotations

import json

import pytest
from tui_support import ScriptedEngine, run_async, scripted_app, scripted_loader, wait_for

from dsvl_tui.storage import config

BAD_THEMES = [["x"], {"name": "x"}, 7, 1.5, True, None]


@pytest.mark.parametrize("value", BAD_THEMES, ids=lambda v: type(v).__name__)
def test_a_theme_of_the_wrong_type_is_ignored_with_one_note(value):
    config.config_path().parent.mkdir(parents=True)
    config.config_path().write_text(json.dumps({"theme": value, "other": [1]}))
    notes: list[str] = []
    assert config.load_config(notes.append) == {"other": [1]}  # keys the app does not read are kept
    assert len(notes) == 1 and "'theme'" in notes[0] and "expected text" in notes[0] and "\n" not in notes[0]
    config.save_config(theme="nord")  # choosing again replaces the bad value
    assert config.load_config(notes.append) == {"theme": "nord", "other": [1]} and len(notes) == 1


@pytest.mark.parametrize("content", [b"{broken", b"[" * 100_000 + b"]" * 100_000, b'["theme"]', b"\xff\xfe{}"],
                         ids=["not-json", "nested-deep", "not-an-object", "not-utf8"])
def test_a_broken_config_file_reads_as_empty_with_one_note(content):
    config.config_path().parent.mkdir(parents=True)
    config.config_path().write_bytes(content)
    notes: list[str] = []
    assert config.load_config(notes.append) == {}
    assert len(notes) == 1 and str(config.config_path()) in notes[0]


def test_no_config_file_is_no_problem():
    notes: list[str] = []
    assert config.load_config(notes.append) == {} and notes == []


@pytest.mark.slow
@run_async
async def test_the_app_starts_with_a_bad_theme_in_the_config_and_says_so_once():
    import themes
    from dsvl_tui.core.options import Options
    from dsvl_tui.tui.app import DsvlApp

    config.config_path().parent.mkdir(parents=True)
    config.config_path().write_text('{"theme": ["x"]}')
    app = scripted_app()
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: len(app._notifications) > 0)
        messages = [n.message for n in app._notifications]
        assert len([m for m in messages if "config" in m]) == 1 and "'theme'" in messages[0]
        assert app.theme == themes.DEFAULT_THEME
    # --theme given: the bad value is still only noted, and the choice replaces it.
    app = DsvlApp(Options(theme="nord"), loader=scripted_loader(ScriptedEngine()))
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: config.load_config().get("theme") == "nord")
