"""The app answering: the first screen before the model, streaming through the real engine, stopping,
one answer at a time, errors in the worker, a bad image, the view following the stream."""

from __future__ import annotations

import threading

import pytest
from tui_support import (
    GREEDY,
    ScriptedEngine,
    answered,
    answers,
    notices,
    ready,
    real_app,
    run_async,
    screen_text,
    scripted_app,
    type_line,
    wait_for,
)

import engine
from dsvl_tui.core.text import printable
from dsvl_tui.tui.widgets import AssistantMessage

pytestmark = pytest.mark.usefixtures("in_tmp")  # tests/tui/conftest.py: the current folder is the test's own


# --- start-up, streaming, stopping --------------------------------------------


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
@run_async
async def test_a_bad_image_is_refused_and_the_message_given_back(tiny, tmp_path):
    from dsvl_tui.core.conversation import Attachment

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


@pytest.mark.slow
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


@pytest.mark.slow
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
