"""A turn the model refuses before generating (a bad image, too long) loses nothing: a /regenerate keeps
its question and shows the answer it had again; an /edit shows the version it replaced again."""

from __future__ import annotations

import pytest
from tui_support import ScriptedEngine, answered, notices, ready, run_async, scripted_app, type_line, wait_for

from dsvl_tui.core.branches import detach
from dsvl_tui.core.conversation import Conversation
from engine.errors import EngineError

pytestmark = pytest.mark.usefixtures("in_tmp")  # tests/tui/conftest.py: the current folder is the test's own


def _chat(*texts: str) -> Conversation:
    conversation = Conversation()
    for number, text in enumerate(texts):
        if number % 2 == 0:
            conversation.add_user(text)
        else:
            conversation.add_answer(text)
    return conversation


def test_a_refused_regenerate_keeps_the_question_and_shows_the_answer_it_had():
    conversation = _chat("Q1", "A1", "Q2", "A2")
    question = conversation.messages[2]
    assert conversation.for_regenerate()
    assert [m.text for m in conversation.messages] == ["Q1", "A1", "Q2"]
    assert conversation.take_back(question) is False  # the question stays: it is not the user's to retype
    assert [m.text for m in conversation.messages] == ["Q1", "A1", "Q2", "A2"]
    assert not conversation.alternatives


def test_a_refused_edit_drops_the_new_version_and_shows_the_one_it_replaced():
    conversation = _chat("Q1", "A1", "Q2", "A2")
    detach(conversation, 2)  # what /edit 2 does before the changed text is sent
    conversation.add_user("Q2 changed")
    changed = conversation.messages[-1]
    assert conversation.take_back(changed) is True  # the changed text goes back to the input
    assert [m.text for m in conversation.messages] == ["Q1", "A1", "Q2", "A2"]
    assert not conversation.alternatives


def test_a_refused_first_message_edit_shows_the_first_version_again():
    conversation = _chat("Q1", "A1")
    detach(conversation, 0)
    conversation.add_user("Q1 changed")
    assert conversation.take_back(conversation.messages[-1]) is True
    assert [m.text for m in conversation.messages] == ["Q1", "A1"]


def test_a_refused_new_question_is_dropped_as_before():
    conversation = _chat("Q1", "A1", "Q2")
    assert conversation.take_back(conversation.messages[-1]) is True
    assert [m.text for m in conversation.messages] == ["Q1", "A1"]
    assert conversation.take_back(conversation.messages[0]) is False  # not the last message: nothing changes
    assert [m.text for m in conversation.messages] == ["Q1", "A1"]


@run_async
async def test_in_the_app_a_refused_regenerate_shows_the_old_answer_and_the_model_goes_on():
    backend = ScriptedEngine(["First", " answer"])
    app = scripted_app(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await type_line(pilot, "question")
        await answered(pilot)
        backend.start_error = EngineError("the prompt is too long for the context window")
        await type_line(pilot, "/regenerate")
        await wait_for(pilot, lambda: bool(notices(app, error=True)))
        assert notices(app, error=True)[-1].startswith("not sent: ")
        conversation = app.active.conversation
        await wait_for(pilot, lambda: [m.text for m in conversation.messages] == ["question", "First answer"])
        assert not conversation.alternatives and app.prompt.text == ""  # nothing typed comes back
        backend.start_error = None
        await type_line(pilot, "/regenerate")
        question = conversation.messages[0]

        def answered_again() -> bool:
            return (app.queue.for_pane(app.active) is None and len(conversation.messages) == 2
                    and len(conversation.alternatives.get(question.id, [])) == 1)

        await wait_for(pilot, answered_again)  # the model goes on; the first answer is kept as a branch
        assert [m.text for m in conversation.messages] == ["question", "First answer"]
