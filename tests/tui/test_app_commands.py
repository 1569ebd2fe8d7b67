"""The slash commands in the app: /image, pasted paths, type-ahead, /save /load /export, /reset /undo /edit
/regenerate, tabs, /system /set /model /help /copy /stop /resume, /theme, /quit; /load and /image read off
the event loop."""

from __future__ import annotations

import threading

import pytest
from PIL import Image
from textual import events
from tui_support import (
    FIXED_INFO,
    ScriptedEngine,
    answered,
    answers,
    notices,
    picture,
    ready,
    real_app,
    run_async,
    screen_text,
    scripted_app,
    scripted_loader,
    type_line,
    wait_for,
)

from dsvl_tui.commands.registry import registry
from dsvl_tui.core.conversation import Conversation
from dsvl_tui.core.options import Options
from dsvl_tui.tui.app import DsvlApp, run_tui
from dsvl_tui.tui.screens import HelpScreen, ResumeScreen
from dsvl_tui.tui.widgets import AssistantMessage, ChatPane, ImagePreview, UserMessage
from engine.testing.random_checkpoints import write_checkpoint

pytestmark = pytest.mark.usefixtures("in_tmp")  # tests/tui/conftest.py: the current folder is the test's own


# --- commands ----------------------------------------------------------------------


@pytest.mark.slow
@run_async
async def test_image_command_with_a_quoted_path_then_send(tiny, tmp_path):
    photo = picture(tmp_path / "my photo.png")
    app = real_app(tiny)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await type_line(pilot, f"/image '{photo}'")
        assert [a.name for a in app.active.conversation.pending] == ["my photo.png"]
        assert app.status.pending_images == 1 and "+1 image" in str(app.status.render())
        await type_line(pilot, "What is in the picture?")
        await answered(pilot)
        user = app.active.conversation.messages[0]
        assert [a.name for a in user.images] == ["my photo.png"] and app.status.pending_images == 0
        preview = app.active.query_one(UserMessage).query_one(ImagePreview)
        await wait_for(pilot, lambda: preview.has_cells)
        assert "my photo.png" in screen_text(app)


@run_async
async def test_pasting_a_dropped_file_path_attaches_it(tmp_path):
    photo = picture(tmp_path / "dropped one.png")
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        app.prompt.focus()
        await pilot.pause()
        app.prompt.post_message(events.Paste(f"'{photo}'"))  # what a terminal sends for a dropped file
        await wait_for(pilot, lambda: len(app.active.conversation.pending) == 1)
        assert app.prompt.text == ""


@run_async
async def test_unknown_command_and_bad_argument_send_nothing():
    backend = ScriptedEngine()
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "/rest")
        await type_line(pilot, "/set temprature 1")
        await type_line(pilot, "/image /no/such/file.png")
        await pilot.pause()
        errors = notices(app, error=True)
        assert errors[0] == "unknown command /rest; did you mean /reset?"
        assert "did you mean temperature?" in errors[1]
        assert "/no/such/file.png" in errors[2] and all("\n" not in e for e in errors)
        assert backend.calls == [] and app.active.conversation.messages == []


def _type_ahead(app, lines: list[str]) -> None:
    """Post the keys of ``lines`` (each ending with Enter) at once, as a terminal does for fast typing."""
    names = {" ": "space", "/": "slash", ".": "full_stop", "?": "question_mark", "_": "underscore", "-": "minus"}
    for line in lines:
        for char in line:
            app.post_message(events.Key(char if char.isalnum() else names[char], char))
        app.post_message(events.Key("enter", "\r"))


def _column(pane: ChatPane) -> list[str]:
    from dsvl_tui.tui.widgets import Notice

    shown = {Notice: lambda w: "notice: " + w.text.split(" (")[0], UserMessage: lambda w: "you: " + w.message.text,
             AssistantMessage: lambda w: "answer"}
    return [shown[type(child)](child) for child in pane.children if type(child) in shown]


@pytest.mark.slow
@run_async
async def test_type_ahead_shows_notices_in_the_order_typed(tmp_path):
    """Commands typed before a question: their notices come before it (they landed between the question
    and its answer, or vanished), and an image attached just before is the question's (issue 16)."""
    picture(tmp_path / "red.png")
    loaded = threading.Event()
    app = scripted_app(gate=loaded)
    async with app.run_test() as pilot:
        app.prompt.focus()
        await pilot.pause()
        _type_ahead(app, ["/set temperature 0.5", "hello", "/set top_k 3"])  # while the model loads
        await wait_for(pilot, lambda: len(notices(app)) == 2)
        loaded.set()
        await answered(pilot)
        assert _column(app.active) == ["notice: temperature=0.5", "you: hello", "answer", "notice: top_k=3"]

        _type_ahead(app, ["/image red.png", "what is it?"])
        await answered(pilot, 2)
        assert _column(app.active)[4:] == ["notice: attached red.png", "you: what is it?", "answer"]
        assert [a.name for a in app.active.conversation.messages[2].images] == ["red.png"]


@pytest.mark.slow
@run_async
async def test_save_load_and_export(tiny, tmp_path):
    app = real_app(tiny)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "remember this")
        await answered(pilot)
        await type_line(pilot, f"/save {tmp_path / 'chat.json'}")
        await type_line(pilot, f"/export {tmp_path / 'chat.md'}")
        assert (tmp_path / "chat.json").is_file() and "remember this" in (tmp_path / "chat.md").read_text()
        await type_line(pilot, f"/load {tmp_path / 'chat.json'}")
        await pilot.pause()
        assert len(app.tabs.panes) == 2  # the active pane was not empty: the transcript opens beside it
        assert [m.text for m in app.active.conversation.messages][0] == "remember this"
        assert len(app.active.query(UserMessage)) == 1 and len(app.active.query(AssistantMessage)) == 1


@pytest.mark.slow
@run_async
async def test_reset_undo_edit_regenerate(tiny):
    app = real_app(tiny)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "first question")
        await answered(pilot)
        old = answers(app.active)[0]
        await type_line(pilot, "/regenerate")
        await answered(pilot)
        (new,) = answers(app.active)
        assert new is not old and len(app.active.query(AssistantMessage)) == 1
        await type_line(pilot, "/edit")
        await pilot.pause()
        assert app.prompt.text == "first question" and app.active.conversation.messages == []
        await pilot.press("enter")
        await answered(pilot)
        await type_line(pilot, "/undo")
        await pilot.pause()
        assert app.active.conversation.messages == [] and not app.active.query(UserMessage)
        await type_line(pilot, "again")
        await answered(pilot)
        await type_line(pilot, "/reset")
        await pilot.pause()
        assert app.active.conversation.messages == [] and app.active.query(".welcome")


@pytest.mark.slow
@run_async
async def test_new_close_next_prev_commands():
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        first = app.active
        await type_line(pilot, "/new")
        await pilot.pause()
        second = app.active
        assert len(app.tabs.panes) == 2 and second is not first
        await type_line(pilot, "/prev")
        await type_line(pilot, "/set temperature 0.7")
        assert notices(app, error=False)[-1] == ("temperature=0.7 (from the next answer, "
                                                 "for this tab; new tabs start from it)")
        await type_line(pilot, "/system Be brief.")
        await type_line(pilot, "/new")  # a new tab starts from this tab's settings and system prompt
        await pilot.pause()
        third = app.active.conversation
        assert (third.settings.temperature, third.system) == (0.7, "Be brief.")
        assert second.conversation.settings.temperature != 0.7  # the other tab kept its own
        await type_line(pilot, "/close")
        await pilot.pause()
        assert app.tabs.panes == [first, second]
        if app.active is not second:
            await type_line(pilot, "/next")
        assert app.active is second
        await type_line(pilot, "/prev")
        assert app.active is first
        await type_line(pilot, "/next")
        assert app.active is second
        await type_line(pilot, "/close")
        await pilot.pause()
        assert app.tabs.panes == [first] and app.active is first
        await type_line(pilot, "/close")  # the last pane: a fresh one replaces it
        await pilot.pause()
        assert len(app.tabs.panes) == 1 and app.active is not first and app.active.is_mounted


@pytest.mark.slow
@run_async
async def test_system_set_model_help_copy_stop_resume(tiny, tmp_path):
    other = write_checkpoint(tmp_path / "other-vl-chat", seed=5)
    app = real_app(tiny)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "/system You are terse.")
        await type_line(pilot, "/set temperature 0.5")
        conversation = app.active.conversation
        assert conversation.system == "You are terse." and conversation.settings.temperature == 0.5
        await type_line(pilot, "/help")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        for command in registry.commands("tui"):
            assert command.usage in app.screen.text
        assert "Ctrl+J" in app.screen.text
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.main)
        await type_line(pilot, "/help set")  # one command: a notice
        assert notices(app, error=False)[-1].startswith("/set [KEY [VALUE]]:")
        await type_line(pilot, "hi")
        await answered(pilot)
        await type_line(pilot, "/copy")
        assert app.clipboard == answers(app.active)[0].text
        await type_line(pilot, "/stop")
        assert "nothing is being generated" in notices(app, error=True)[-1]
        await type_line(pilot, "/resume")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.main)
        await type_line(pilot, f"/model {other}")
        await wait_for(pilot, lambda: app.engine.info.model_id == str(other))
        assert app.status.model == str(other) and conversation.model == str(other)


@pytest.mark.slow
@run_async
async def test_theme_command_switches_and_remembers():
    from dsvl_tui.storage.config import load_config

    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        assert app.theme == "dsvl-night"
        await type_line(pilot, "/theme dsvl-paper")
        assert app.theme == "dsvl-paper"
        await wait_for(pilot, lambda: load_config().get("theme") == "dsvl-paper")
        await type_line(pilot, "/theme nord")
        assert app.theme == "nord"
        await type_line(pilot, "/theme dsvl-nigth")
        assert "did you mean dsvl-night?" in notices(app, error=True)[-1] and app.theme == "nord"
    async with scripted_app().run_test() as pilot:  # the next start uses the remembered theme
        await wait_for(pilot, lambda: load_config().get("theme") == "nord")
        assert pilot.app.theme == "nord"


def test_theme_option_and_an_unknown_one(capsys):
    from dsvl_tui.tui.app import pick_theme

    assert pick_theme("dsvl-paper", {"dsvl-paper"}) == "dsvl-paper"
    assert pick_theme(None, {"dsvl-night"}) == "dsvl-night"
    assert run_tui(Options(theme="dsvl-papr")) == 2
    assert "did you mean dsvl-paper?" in capsys.readouterr().err


@pytest.mark.slow
@run_async
async def test_theme_option_is_applied_and_remembered():
    from dsvl_tui.storage.config import load_config

    app = DsvlApp(Options(model=FIXED_INFO.model_id, theme="dsvl-paper"), loader=scripted_loader(ScriptedEngine()))
    async with app.run_test() as pilot:
        assert app.theme == "dsvl-paper"
        await wait_for(pilot, lambda: load_config().get("theme") == "dsvl-paper")


@pytest.mark.slow
@run_async
async def test_quit_command():
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "/quit")
        await pilot.pause()
    assert app.return_code == 0




@pytest.mark.slow
@run_async
async def test_load_reads_the_transcript_off_the_event_loop(tmp_path, monkeypatch):
    """A transcript at the format's limits takes seconds to read: never on the thread that draws the screen."""
    from dsvl_tui.storage import transcript

    saved = Conversation(model="tiny")
    saved.add_user("from the file")
    transcript.save_transcript(saved, tmp_path / "chat.json")
    read_on: list[str] = []
    real_load = transcript.load_transcript

    def load(path, **kwargs):
        read_on.append(threading.current_thread().name)
        return real_load(path, **kwargs)

    monkeypatch.setattr(transcript, "load_transcript", load)
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, f"/load {tmp_path / 'chat.json'}")
        await wait_for(pilot, lambda: [m.text for m in app.active.conversation.messages] == ["from the file"])
        assert read_on and read_on[0] != threading.main_thread().name
        await type_line(pilot, f"/load {tmp_path / 'missing.json'}")
        await wait_for(pilot, lambda: notices(app, error=True))
        assert "missing.json" in notices(app, error=True)[-1]


@pytest.mark.slow
@run_async
async def test_image_decodes_the_picture_off_the_event_loop(tmp_path, monkeypatch):
    """A large picture takes seconds to decode and check: /image never does it on the thread that draws."""
    import engine.images

    Image.new("RGB", (32, 32), "red").save(tmp_path / "red.png")
    decoded_on: list[str] = []
    real_load = engine.images.load_image

    def load_image(source):
        decoded_on.append(threading.current_thread().name)
        return real_load(source)

    monkeypatch.setattr(engine.images, "load_image", load_image)
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, f"/image {tmp_path / 'red.png'} {tmp_path / 'gone.png'}")
        await wait_for(pilot, lambda: len(app.active.conversation.pending) == 1 and notices(app, error=True))
        assert decoded_on and threading.main_thread().name not in decoded_on
        assert "gone.png" in notices(app, error=True)[-1]
