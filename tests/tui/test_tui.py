"""The Textual app, driven through the Pilot.

Most tests run the real engine on the tiny checkpoint (loads in a fraction of
a second), the streaming path always. A scripted stand-in engine
(``tui_support.ScriptedEngine``) is used only where timing matters: holding
an answer half way to queue another, scroll, or stop it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image
from textual import events
from tui_support import (
    FIXED_INFO,
    GREEDY,
    ScriptedEngine,
    first_choice,
    notices,
    ready,
    run_async,
    screen_text,
    scripted_app,
    scripted_loader,
    type_line,
    wait_for,
)

import engine
from dsvl_tui.commands.registry import registry
from dsvl_tui.conversation import Conversation
from dsvl_tui.options import Options
from dsvl_tui.storage.paths import history_file
from dsvl_tui.storage.prompt_history import PromptHistory
from dsvl_tui.text import printable
from dsvl_tui.tui.app import DsvlApp, run_tui
from dsvl_tui.tui.screens import HelpScreen, MainScreen, ResumeScreen, key_names
from dsvl_tui.tui.widgets import AssistantMessage, ChatPane, ImagePreview, UserMessage
from engine.testing.random_checkpoints import write_checkpoint


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):  # data and config folders: conftest's private_dirs
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("tui") / "tiny-vl-chat", seed=3)


def real_app(model, settings=GREEDY, **options) -> DsvlApp:
    return DsvlApp(Options(model=str(model), settings=settings, **options))


def answers(pane: ChatPane) -> list:
    return [m for m in pane.conversation.messages if m.role == "assistant"]


async def answered(pilot, count: int = 1, pane: ChatPane | None = None) -> None:
    app = pilot.app
    target = pane or app.active
    await wait_for(pilot, lambda: len(answers(target)) >= count and app.queue.for_pane(target) is None)


def picture(path: Path) -> Path:
    Image.new("RGB", (32, 24), (0, 128, 255)).save(path)
    return path


# --- start-up, streaming, stopping --------------------------------------------


@run_async
async def test_first_screen_paints_before_the_model_and_a_message_waits_for_it():
    gate = threading.Event()
    backend = ScriptedEngine(["Hi", " there"])
    app = scripted_app(backend, gate=gate)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "downloading 50%" in str(app.status.render()))  # the loader's thread said it
        assert app.status.state == "loading" and app.engine is None
        assert app.focused is app.prompt
        await type_line(pilot, "are you there?")
        widget = app.active.pending_answer
        assert widget is not None and widget.state == "waiting"
        assert "waiting for the model to load" in str(widget.query_one(".marker").render())
        assert backend.calls == []
        gate.set()
        await answered(pilot)
        assert answers(app.active)[0].text == "Hi there"
        assert app.status.state == "ready"


@run_async
async def test_long_lived_objects_are_set_aside_while_the_app_runs_and_handed_back_after():
    import gc

    app = scripted_app(ScriptedEngine(["Hi"]))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert gc.get_freeze_count() > 0  # full collections skip what existed at the first frame
    assert gc.get_freeze_count() == 0  # and nothing stays exempt once the app has ended


@run_async
async def test_streaming_answer_through_the_real_engine(tiny):
    app = real_app(tiny)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert app.status.model == str(tiny) and app.status.device == "cpu fp32"
        await type_line(pilot, "Describe this image in detail.")
        await answered(pilot)
        conversation = app.active.conversation
        answer = conversation.messages[-1]
        assert answer.role == "assistant" and answer.stats.new_tokens == GREEDY.max_new_tokens
        widget = app.active.query(AssistantMessage).last()
        assert widget.text == printable(answer.text) and widget.state == "done"
        assert widget.markdown.source == printable(answer.text)
        expected = len(app.engine.prepare(conversation.engine_messages()).input_ids)
        await wait_for(pilot, lambda: app.status.context_used == expected)
        assert app.status.context_window == 4096
        assert app.status.tokens_per_second and app.status.time_to_first_token is not None
        assert app.status.state == "ready"
        shown = screen_text(app)
        assert "\x1b" not in shown and "\x10" not in shown  # the random model emits control bytes
        # A second turn goes through the same path with the history.
        await type_line(pilot, "And the sky?")
        await answered(pilot, 2)
        assert [m.role for m in conversation.messages] == ["user", "assistant", "user", "assistant"]


@run_async
async def test_escape_stops_the_real_answer_and_keeps_what_was_produced(tiny):
    app = real_app(tiny, settings=engine.GenerationSettings(temperature=0, max_new_tokens=3000))
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "Tell me a long story.")
        await wait_for(pilot, lambda: app.active.pending_answer is not None and len(app.active.pending_answer.text) > 5)
        assert app.status.state == "generating"
        await pilot.press("escape")
        await answered(pilot)
        answer = app.active.conversation.messages[-1]
        assert answer.stopped and answer.text and answer.stats.stop_reason == "cancelled"
        assert answer.stats.new_tokens < 3000
        widget = app.active.query(AssistantMessage).last()
        assert widget.state == "stopped" and str(widget.query_one(".marker").render()).startswith("stopped")
        assert app.status.state == "ready"


@run_async
async def test_compile_where_it_cannot_run_is_a_notice_and_the_app_answers(tiny):
    app = real_app(tiny, compile=True)
    async with app.run_test() as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: notices(app))
        assert notices(app) == ["compile: not used (needs CUDA); decoding eagerly"]
        assert notices(app, error=True) == []
        await type_line(pilot, "hello?")
        await answered(pilot)
        assert answers(app.active)[0].text


@run_async
async def test_failed_load_shows_the_error_and_the_app_stays_usable(tiny, tmp_path):
    app = real_app(tmp_path / "no-such-model")
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.model_error is not None)
        assert app.status.state == "error"
        (error,) = notices(app, error=True)
        assert error.startswith("model not loaded: ") and "\n" not in error and "no-such-model" in error
        await type_line(pilot, "hello?")
        assert "load one with /model" in str(app.active.pending_answer.query_one(".marker").render())
        await type_line(pilot, f"/model {tiny}")
        await answered(pilot)  # the waiting message goes once a model is ready
        assert app.status.state == "ready" and app.engine.info.model_id == str(tiny)


@run_async
async def test_context_meter_grows_with_the_answer_and_follows_the_tab():
    backend = ScriptedEngine(["a", "b", "c", "d"], hold_after=2)  # the scripted prepare(): words + 5 a message
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        first = app.active
        await type_line(pilot, "hello")
        await wait_for(pilot, lambda: first.pending_answer is not None and first.pending_answer.text == "ab")
        await wait_for(pilot, lambda: app.status.context_used == 6 + 2)  # the prompt and two tokens so far
        await type_line(pilot, "/new")
        await wait_for(pilot, lambda: app.status.context_used == 0)
        await pilot.press("ctrl+pageup")  # the key, not /prev: no command runs to refresh the bar
        await wait_for(pilot, lambda: app.active is first and app.status.context_used == 8)  # not the new tab's
        backend.gate.set()
        await wait_for(pilot, lambda: first.pending_answer is None and app.status.context_used == 12)
        await pilot.press("ctrl+pagedown")
        await wait_for(pilot, lambda: app.active is not first and app.status.context_used == 0)


@run_async
async def test_one_generation_at_a_time_across_panes():
    backend = ScriptedEngine(["one", " two", " three"], hold_after=1)
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        first = app.active
        await type_line(pilot, "first")
        await wait_for(pilot, lambda: first.pending_answer is not None and first.pending_answer.text == "one")
        await pilot.press("ctrl+n")
        await pilot.pause()
        second = app.active
        assert second is not first and len(app.tabs.panes) == 2
        await type_line(pilot, "second")
        assert second.pending_answer.state == "waiting"
        assert "waiting for its turn" in str(second.pending_answer.query_one(".marker").render())
        assert app.status.waiting == 1 and "1 waiting" in str(app.status.render())
        labels = [str(app.tabs.query_one("TabbedContent").get_tab(f"tab-{p.id}").label) for p in (first, second)]
        assert labels[0].startswith("\u25cf") and labels[1].startswith("\u2026")
        backend.gate.set()
        await answered(pilot, pane=first)
        await answered(pilot, pane=second)
        assert backend.max_concurrent == 1 and len(backend.calls) == 2
        assert answers(second)[0].text == "one two three"


@run_async
async def test_a_second_message_in_a_busy_pane_is_refused_and_kept():
    backend = ScriptedEngine(["slow"], hold_after=0)
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "first")
        await type_line(pilot, "second")
        assert app.prompt.text == "second"
        assert any("still waiting for an answer" in n for n in notices(app, error=True))
        assert [m.text for m in app.active.conversation.messages] == ["first"]
        backend.gate.set()
        await answered(pilot)


@run_async
async def test_errors_in_the_worker_show_in_the_pane_and_the_app_goes_on():
    backend = ScriptedEngine(["partial"], stream_error=engine.GenerationError("out of GPU memory while generating"))
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "hi")
        await answered(pilot)
        answer = answers(app.active)[0]
        assert answer.error == "out of GPU memory while generating" and answer.text == "partial"
        widget = app.active.query(AssistantMessage).last()
        assert widget.has_class("-error") and "out of GPU memory" in str(widget.query_one(".marker").render())
        backend.stream_error = None
        backend.chunks = ["fine"]
        await type_line(pilot, "again")
        await answered(pilot, 2)
        assert answers(app.active)[-1].text == "fine"


@run_async
async def test_a_bad_image_is_refused_and_the_message_given_back(tiny, tmp_path):
    from dsvl_tui.conversation import Attachment

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    app = real_app(tiny)
    async with app.run_test() as pilot:
        await ready(pilot)
        app.active.conversation.pending.append(Attachment(path=str(bad), name="broken.png"))
        await type_line(pilot, "what is this?")
        await wait_for(pilot, lambda: app.queue.for_pane(app.active) is None and notices(app, error=True))
        (error,) = notices(app, error=True)
        assert error.startswith("not sent: ") and "broken.png" in error
        assert app.active.conversation.messages == [] and app.prompt.text == "what is this?"
        assert [a.name for a in app.active.conversation.pending] == ["broken.png"]
        await type_line(pilot, "/image clear")
        await type_line(pilot, "hello")
        await answered(pilot)  # the model is still usable


@run_async
async def test_control_sequences_from_the_model_never_reach_the_screen():
    nasty = ["\x1b]0;pwned\x07Title ", "\x1b[2J\x1b[31mred\x1b[0m", " \x1b]52;c;SGk=\x07done\x9b1m"]
    app = scripted_app(ScriptedEngine(nasty))
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "\x1b[31mtitle\x07 please")
        await answered(pilot)
        assert answers(app.active)[0].text == "".join(nasty)  # stored as the model said it
        shown = screen_text(app)
        assert "Title red done" in shown
        for bad in ("\x1b", "\x07", "\x9b", "pwned"):
            assert bad not in shown


@run_async
async def test_view_follows_the_stream_unless_the_user_scrolled_up():
    lines = [f"line {i}\n\n" for i in range(60)]
    backend = ScriptedEngine(lines, hold_after=30)
    app = scripted_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await type_line(pilot, "count")
        pane = app.active
        await wait_for(pilot, lambda: pane.pending_answer is not None and "line 29" in pane.pending_answer.text)
        await wait_for(pilot, lambda: pane.max_scroll_y > 0 and pane.scroll_y == pane.max_scroll_y)  # following
        await pilot.press("pageup")
        await wait_for(pilot, lambda: pane.scroll_y < pane.max_scroll_y)
        await pilot.wait_for_scheduled_animations()
        held = pane.scroll_y
        backend.gate.set()
        await answered(pilot)
        await pilot.wait_for_scheduled_animations()
        assert pane.scroll_y == held < pane.max_scroll_y  # left where the user put it
        await pilot.press("ctrl+end")
        await wait_for(pilot, lambda: pane.scroll_y == pane.max_scroll_y)


# --- commands ----------------------------------------------------------------------


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


@run_async
async def test_theme_option_is_applied_and_remembered():
    from dsvl_tui.storage.config import load_config

    app = DsvlApp(Options(model=FIXED_INFO.model_id, theme="dsvl-paper"), loader=scripted_loader(ScriptedEngine()))
    async with app.run_test() as pilot:
        assert app.theme == "dsvl-paper"
        await wait_for(pilot, lambda: load_config().get("theme") == "dsvl-paper")


@run_async
async def test_quit_command():
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "/quit")
        await pilot.pause()
    assert app.return_code == 0


# --- keys ------------------------------------------------------------------------------


@run_async
async def test_tab_keys_new_close_next_previous():
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        first = app.active
        await pilot.press("ctrl+n")
        await pilot.press("ctrl+n")
        await pilot.pause()
        panes = app.tabs.panes
        assert len(panes) == 3 and app.active is panes[2]
        await pilot.press("alt+right")
        assert app.active is panes[0]
        await pilot.press("ctrl+pageup")
        assert app.active is panes[2]
        await pilot.press("alt+left")
        assert app.active is panes[1]
        await pilot.press("ctrl+pagedown")
        assert app.active is panes[2]
        await pilot.pause()
        assert app.query_one("TabbedContent").active == f"tab-{panes[2].id}"
        await pilot.press("ctrl+w")
        await pilot.pause()
        assert len(app.tabs.panes) == 2 and app.active is panes[1] and first in app.tabs.panes
        assert app.focused is app.prompt


@run_async
async def test_keys_attach_regenerate_help_quit(tiny):
    app = real_app(tiny)
    async with app.run_test() as pilot:
        await ready(pilot)
        await pilot.press("ctrl+o")
        assert app.prompt.text == "/image " and app.focused is app.prompt
        app.prompt.clear()
        await type_line(pilot, "hello")
        await answered(pilot)
        first = answers(app.active)[0]
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: answers(app.active) and answers(app.active)[0] is not first
                       and app.queue.for_pane(app.active) is None)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert "/regenerate" in app.screen.text
        await pilot.press("ctrl+q")  # quits from a modal screen too
        await pilot.pause()
    assert app.return_code == 0


@run_async
async def test_input_keys_enter_newline_history_and_completion(tmp_path):
    photo = picture(tmp_path / "scene.png")
    backend = ScriptedEngine(["ok"])
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        app.prompt.focus()
        await pilot.press("a", "ctrl+j", "b", "enter")
        await answered(pilot)
        assert app.active.conversation.messages[0].text == "a\nb"
        await pilot.press("up")
        assert app.prompt.text == "a\nb"
        await pilot.press("down")
        assert app.prompt.text == ""
        await pilot.press("/", "r", "e", "g", "tab")
        assert app.prompt.text == "/regenerate "
        app.prompt.clear()
        await pilot.press(*"/image sc")
        assert app.prompt.suggestion == "ene.png"
        await pilot.press("tab")
        assert app.prompt.text == "/image scene.png "
        await pilot.press("enter")
        await pilot.pause()
        assert [a.name for a in app.active.conversation.pending] == [photo.name]


@run_async
async def test_prompts_are_recalled_in_the_next_run_and_shared_with_the_repl():
    from prompt_toolkit.history import FileHistory

    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "first question")
        await answered(pilot)
        await type_line(pilot, "line one\nline two")
        await answered(pilot, 2)
    # The REPL reads the same file, newest first.
    assert list(FileHistory(str(history_file())).load_history_strings())[:2] == ["line one\nline two",
                                                                                   "first question"]
    FileHistory(str(history_file())).store_string("typed in the REPL")  # what the REPL's prompt does

    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: len(app.prompt.prompts) == 3)
        app.prompt.focus()
        await pilot.press("up")
        assert app.prompt.text == "typed in the REPL"
        await pilot.press("up")
        assert app.prompt.text == "line one\nline two"
        await pilot.press("up", "up")  # the cursor is on the last line: the first Up moves it
        assert app.prompt.text == "first question"


@run_async
async def test_a_corrupt_or_unreadable_history_file_does_not_stop_the_app():
    import random

    from prompt_toolkit.history import FileHistory

    path = history_file()
    path.parent.mkdir(parents=True)
    path.write_bytes(random.Random(7).randbytes(8192) + b"\n+\xff\xfe\x00\x1b[2J\n")
    FileHistory(str(path)).store_string("still here")
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: app.prompt.prompts)
        assert app.prompt.prompts[-1] == "still here"
        assert all(printable(text) == text and "\ufffd" not in text for text in app.prompt.prompts)
        await type_line(pilot, "hello")
        await answered(pilot)

    path.unlink()
    path.mkdir()  # cannot be read or appended to
    app = scripted_app()
    warnings: list[str] = []
    app.notify = lambda message, **_: warnings.append(str(message))
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "hello")
        await answered(pilot)
        await pilot.press("up")
        assert app.prompt.text == "hello"  # this run's prompts are still recalled
        await wait_for(pilot, lambda: any("history is not saved" in w for w in warnings))


def test_prompt_history_keeps_the_most_recent_prompts(tmp_path):
    history = PromptHistory(tmp_path / "history", limit=3)
    assert history.load() == []  # no file yet
    for text in ["a", "b", "b", "c", "d"]:
        history.store(text)
    assert history.load() == ["b", "c", "d"]


@run_async
async def test_escape_withdraws_a_waiting_answer():
    backend = ScriptedEngine(["a", "b"], hold_after=1)
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        first = app.active
        await type_line(pilot, "one")
        await pilot.press("ctrl+n")
        await type_line(pilot, "two")
        second = app.active
        await pilot.press("escape")  # the waiting one leaves the line without running
        await answered(pilot, pane=second)
        assert answers(second)[0].stopped and answers(second)[0].text == ""
        await pilot.press("alt+left")
        await pilot.press("escape")
        await answered(pilot, pane=first)
        assert answers(first)[0].stopped and answers(first)[0].text == "a"
        assert len(backend.calls) == 1


@run_async
async def test_palette_lists_every_command_and_runs_one():
    from textual.command import CommandPalette

    app = scripted_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        palette = app.screen
        await wait_for(pilot, lambda: palette.query_one("CommandList").option_count >= len(registry.commands("tui")))
        listed = screen_text(app)
        for command in registry.commands("tui")[:8]:  # the first screenful, in order
            assert command.usage in listed
        await pilot.press(*"new")
        await wait_for(pilot, lambda: first_choice(palette).startswith("/new"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.tabs.panes) == 2)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        palette = app.screen
        await pilot.press(*"image")
        await wait_for(pilot, lambda: first_choice(palette).startswith("/image"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.prompt.text == "/image ")


# --- modal screens: help and /resume ---------------------------------------------------------


@run_async
async def test_f1_help_lists_every_binding_and_command_and_the_main_keys_wait_under_it():
    from dsvl_tui.tui.widgets import PromptInput

    app = scripted_app()
    async with app.run_test(size=(100, 60)) as pilot:  # tall enough to show the commands below the keys
        await ready(pilot)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = app.screen.text
        assert "``" not in text  # docstrings' markup stays out of the help
        for binding in MainScreen.BINDINGS:
            assert key_names(binding.key) in text and (binding.tooltip or binding.description.lower()) in text
        for key in ("Ctrl+P", "Enter", "Ctrl+J", "Up / Down", "Tab or Right"):  # the palette, the input box
            assert key in text
        assert "Up / Down" in PromptInput.__doc__
        for command in registry.commands("tui"):
            assert f"{command.usage}  " in text and command.summary in text
        assert "/regenerate" in screen_text(app)
        await pilot.press("ctrl+n")  # the main screen's keys wait while a modal is on top
        await pilot.pause()
        assert len(app.tabs.panes) == 1
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.main)
        assert app.queue.running is None and len(app.tabs.panes) == 1
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("f1")  # F1 closes it too
        await wait_for(pilot, lambda: app.screen is app.main)


def _journal_two() -> list[Conversation]:
    import time as clock

    from dsvl_tui.storage.journal import Journal

    made = []
    for number, (first, last) in enumerate([("older question", "older answer"), ("newer question", "newer answer")]):
        conversation = Conversation(title=first)
        conversation.add_user(first)
        conversation.add_answer(f"middle {number}")
        conversation.add_user("and then?")
        conversation.add_answer(last)
        assert Journal().record(conversation) is None
        made.append(conversation)
        clock.sleep(0.02)  # distinct modification times: newest first
    return made


@run_async
async def test_resume_opens_a_list_whose_preview_follows_and_enter_opens_a_tab():
    older, newer = _journal_two()
    app = scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await type_line(pilot, "hello")
        await answered(pilot)  # the active tab is not empty: the resumed one opens in a new tab
        await type_line(pilot, "/resume")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.previewed is not None)
        modal = app.screen
        titles = [c.title for c in modal.choices]
        assert titles.index("newer question") < titles.index("older question")  # newest first
        listed = screen_text(app)
        assert "newer question" in listed and "4 messages, " in listed and " (just now)" in listed
        index = titles.index("newer question")
        for _ in range(index):
            await pilot.press("down")
        await wait_for(pilot, lambda: "newer answer" in modal.preview)
        assert "newer question" in modal.preview and "2 messages between" in modal.preview
        await pilot.press("down")  # the preview follows the highlight
        await wait_for(pilot, lambda: "older answer" in modal.preview)
        assert modal.previewed is not None and modal.previewed.title == "older question"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is app.main and len(app.tabs.panes) == 2)
        await wait_for(pilot, lambda: app.active.conversation.id == older.id)
        assert [m.text for m in app.active.conversation.messages][-1] == "older answer"
        assert any("resumed older question" in n for n in notices(app))


@run_async
async def test_resume_list_closes_with_escape_and_resume_n_still_opens():
    older, newer = _journal_two()
    app = scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/resume")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.main)
        assert len(app.tabs.panes) == 1 and app.active.conversation.is_empty
        await type_line(pilot, "/resume 1")
        await wait_for(pilot, lambda: app.active.conversation.id == newer.id)


@run_async
async def test_resume_reads_the_journal_off_the_event_loop(monkeypatch):
    """Up to 20 journal files are read in a worker thread, not on the loop (Pilot runs it in the main thread)."""
    from dsvl_tui.storage.journal import Journal

    older, newer = _journal_two()
    readers: list[threading.Thread] = []
    recent = Journal.recent

    def recording(self, limit=20):
        readers.append(threading.current_thread())
        return recent(self, limit)

    monkeypatch.setattr(Journal, "recent", recording)
    app = scripted_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/resume")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.main)
        await type_line(pilot, "/resume 2")
        await wait_for(pilot, lambda: app.active.conversation.id == older.id)
    assert len(readers) == 2 and threading.main_thread() not in readers


@run_async
async def test_resume_entries_are_one_line_cut_at_a_word_and_tab_titles_end_at_a_word(tmp_path):
    """A long /resume entry is one line (so eight fit at 80×24, issue 26): its title cut at a word, its
    detail after it, the line ending in an ellipsis instead of wrapping; a long tab title ends at a word
    with an ellipsis (they were cut mid-word; issue 16)."""
    from dsvl_tui.conversation import Attachment
    from dsvl_tui.storage.journal import Journal

    conversation = Conversation()
    conversation.pending.append(Attachment.from_path(picture(tmp_path / "holiday.png")))
    conversation.add_user("Please describe everything you can see in this picture of our summer holiday")
    conversation.add_answer("mountains")
    assert Journal().record(conversation) is None
    app = scripted_app()
    async with app.run_test(size=(60, 24)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/resume")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.previewed is not None)
        rows = screen_text(app).splitlines()
        first = next(i for i, row in enumerate(rows) if "1. Please describe" in row)
        assert "1. Please describe everything you can see\u2026 " in rows[first]
        assert rows[first].rstrip("│▊▎ ").endswith("\u2026")  # the rest of the detail is cut, not wrapped
        assert "messages" not in rows[first + 1] and "holiday" not in rows[first + 1]
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.active.conversation.id == conversation.id)
        assert app.tabs.title_of(app.active) == "1 Please describe\u2026"

    wide = scripted_app()
    async with wide.run_test(size=(140, 30)) as pilot:
        await ready(pilot)
        await type_line(pilot, "/resume")
        await wait_for(pilot, lambda: isinstance(wide.screen, ResumeScreen) and wide.screen.previewed is not None)
        row = next(row for row in screen_text(wide).splitlines() if "1. Please describe" in row)
        assert "2 messages, " in row and "image holiday" in row  # with room, the detail with the first picture


@run_async
async def test_every_rule_of_the_app_stylesheet_matches_a_widget():
    from textual.css.stylesheet import Stylesheet

    from dsvl_tui.tui.app import STYLESHEET

    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        sheet = Stylesheet(variables=app.get_css_variables())
        sheet.add_source(STYLESHEET.read_text(), read_from=(str(STYLESHEET), ""))
        sheet.parse()
        assert len(sheet.rules) >= 3
        for rule in sheet.rules:
            for selector_set in rule.selector_set:
                css = selector_set.css
                assert app.main.query(css) or css in app.main._css_type_names, f"{css} matches nothing"


# --- autosave: journal first, then draw; partial answers on quit, signals and as they stream -----


def _journaled(tmp_path: Path) -> list[dict]:
    import json

    return [json.loads(p.read_text()) for p in sorted((tmp_path / "data" / "journal").glob("*.json"))]


@run_async
async def test_a_sent_message_is_journaled_before_it_is_drawn(tmp_path, monkeypatch):
    import time as clock

    from dsvl_tui.storage.journal import Journal

    record = Journal.record

    def slow_record(self, conv, **options):  # a large new image takes this long to copy
        clock.sleep(0.3)
        return record(self, conv, **options)

    monkeypatch.setattr(Journal, "record", slow_record)
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        app.prompt.load_text_at_end("keep me")
        await pilot.press("enter")
        deadline = clock.monotonic() + 60
        while not app.active.query(UserMessage):  # read the journal the moment the message is drawn
            assert clock.monotonic() < deadline, "the message was never drawn"
            await pilot.pause(0.01)
        [entry] = _journaled(tmp_path)
        assert [m["text"] for m in entry["messages"]] == ["keep me"]
        await answered(pilot)


@run_async
async def test_quit_in_the_middle_of_an_answer_journals_it_as_stopped(tmp_path):
    backend = ScriptedEngine(["Half", " and", " the rest"], hold_after=1)
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "question")
        await wait_for(pilot, lambda: app.queue.running is not None and app.queue.running.streamed == ["Half"])
        await pilot.press("ctrl+q")
    [entry] = _journaled(tmp_path)
    question, answer = entry["messages"]
    assert (question["text"], answer["text"], answer["stopped"]) == ("question", "Half", True)


@run_async
async def test_sigterm_in_the_middle_of_an_answer_journals_it_and_ends_the_app(tmp_path):
    import os
    import signal

    caught = []
    previous = signal.signal(signal.SIGTERM, lambda *args: caught.append(args))  # if the app did not catch it
    try:
        backend = ScriptedEngine(["Half", " and", " the rest"], hold_after=1)
        app = scripted_app(backend)
        async with app.run_test() as pilot:
            await ready(pilot)
            await type_line(pilot, "question")
            await wait_for(pilot, lambda: app.queue.running is not None and app.queue.running.streamed == ["Half"])
            os.kill(os.getpid(), signal.SIGTERM)
            await wait_for(pilot, lambda: app.return_code is not None, timeout=5)
        assert caught == [] and app.return_code == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the handler before the app's is back
    finally:
        signal.signal(signal.SIGTERM, previous)
    [entry] = _journaled(tmp_path)
    assert [(m["text"], m["stopped"]) for m in entry["messages"]] == [("question", False), ("Half", True)]


@run_async
async def test_a_streaming_answer_is_journaled_as_it_grows(tmp_path, monkeypatch):
    from dsvl_tui.tui import app as app_module

    monkeypatch.setattr(app_module, "PARTIAL_SAVE_SECONDS", 0.0)
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
        await answered(pilot)
        await wait_for(pilot, lambda: not _journaled(tmp_path)[0]["messages"][-1]["stopped"])
    assert _journaled(tmp_path)[0]["messages"][-1]["text"] == "Half and the rest"


@run_async
async def test_a_bug_in_a_handler_ends_the_app_with_code_1_one_line_and_the_crash_log(tmp_path):
    """Not Textual's page of traceback with locals over the terminal: the log gets it, the user one line."""
    app = scripted_app()
    with pytest.raises(ZeroDivisionError):  # run_test re-raises a handler's exception into the test
        async with app.run_test() as pilot:
            await ready(pilot)
            app.call_later(lambda: 1 / 0)
            await wait_for(pilot, lambda: app.return_code is not None)
    assert app.return_code == 1
    log = (tmp_path / "data" / "crash.log").read_text()
    assert "ZeroDivisionError" in log and "Traceback" in log
    assert not app._exit_renderables  # no rich traceback page printed over the terminal at exit


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


@run_async
async def test_the_modal_screens_share_the_dialog_frame():
    app = scripted_app()
    async with app.run_test() as pilot:
        await ready(pilot)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        panel = app.screen.query_one("Vertical")
        assert panel.styles.border.top[0] == "round" and panel.styles.max_width is not None
        assert app.screen.styles.align_horizontal == "center"
