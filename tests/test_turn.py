"""``core.turn``: every front end's one answer runner, on the real tiny engine.

A turn is recorded the same way however it ends: complete, stopped, failed
part way (the text so far kept with the error); a refused question and one a
command removed meanwhile record nothing.
"""

from __future__ import annotations

import threading

import pytest

from dsvl_tui.core.conversation import Conversation
from dsvl_tui.core.turn import Cancelled, Delta, Done, Failed, Turn, stream_answer
from engine.errors import GenerationError, ImageError
from engine.types import GenerationSettings

LONG = GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=400, ignore_eos=True)
SHORT = GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=12)


def asked(settings: GenerationSettings = SHORT) -> Conversation:
    conversation = Conversation(settings=settings)
    conversation.add_user("Describe the weather.")
    return conversation


class Breaking:
    """The real engine, whose stream breaks after ``after`` chunks (out of memory part way)."""

    def __init__(self, inner, after: int = 3) -> None:
        self.inner, self.after, self.info = inner, after, inner.info

    def stream(self, messages, settings, **kwargs):
        inner, after = self.inner.stream(messages, settings, **kwargs), self.after

        class Stream:
            stats, token_ids, close = inner.stats, inner.token_ids, inner.close

            def __iter__(self):
                for index, chunk in enumerate(inner):
                    if index == after:
                        inner.close()
                        raise GenerationError("out of memory while generating")
                    yield chunk

        return Stream()


class Refusing:
    info = None

    def stream(self, messages, settings, **kwargs):
        raise ImageError("photo.png is not an image; attach a PNG, JPEG, GIF, WebP or BMP file")


def test_a_complete_turn_yields_its_text_then_done_and_records_it(tiny_engine) -> None:
    conversation = asked()
    turn = Turn(conversation)
    turn.open(tiny_engine)
    events = list(turn.events())
    *deltas, ending = events
    assert deltas and all(isinstance(event, Delta) for event in deltas) and isinstance(ending, Done)
    text = "".join(event.text for event in deltas)
    assert ending.text == text and ending.stats.new_tokens == SHORT.max_new_tokens
    answer = turn.record()
    assert answer is conversation.messages[-1] and answer.text == text and not answer.stopped and not answer.error
    assert turn.record() is None and len(conversation.messages) == 2  # once
    assert conversation.quantize == "none" and conversation.endpoint == ""  # what answered, for the transcript


def test_a_cancelled_turn_keeps_the_text_so_far_as_stopped(tiny_engine) -> None:
    conversation, cancel = asked(LONG), threading.Event()
    turn = Turn(conversation, cancel=cancel)
    turn.open(tiny_engine)
    seen = []
    for event in turn.events():
        if isinstance(event, Delta):
            seen.append(event.text)
            if len(seen) == 3:
                cancel.set()
    assert isinstance(turn.ending, Cancelled) and turn.ending.stats.stop_reason == "cancelled"
    answer = turn.record()
    assert answer is not None and answer.stopped and answer.text == "".join(seen)
    assert 3 <= answer.stats.new_tokens < LONG.max_new_tokens


def test_a_turn_that_breaks_part_way_keeps_its_text_with_the_error(tiny_engine) -> None:
    conversation = asked(LONG)
    turn = Turn(conversation)
    turn.open(Breaking(tiny_engine))
    *deltas, ending = list(turn.events())
    assert len(deltas) == 3 and isinstance(ending, Failed) and ending.error == "out of memory while generating"
    answer = turn.record()
    assert answer is not None and answer.error == ending.error and answer.text == "".join(d.text for d in deltas)
    assert not answer.stopped


def test_a_refused_question_records_nothing() -> None:
    conversation = asked()
    turn = Turn(conversation)
    with pytest.raises(ImageError):
        turn.open(Refusing())
    assert turn.refused and turn.record() is None and len(conversation.messages) == 1


def test_an_answer_whose_question_was_removed_meanwhile_is_dropped(tiny_engine) -> None:
    conversation = asked()
    turn = Turn(conversation)
    turn.open(tiny_engine)
    for _event in turn.events():
        pass
    conversation.undo()  # /undo while it streamed
    assert turn.partial() is None and turn.record() is None and conversation.messages == []


def test_the_answer_so_far_is_checkpointed_as_stopped_while_it_streams(tiny_engine) -> None:
    conversation = asked()
    snapshots: list[Conversation] = []
    turn = Turn(conversation, checkpoint=snapshots.append, every=0)
    turn.open(tiny_engine)
    deltas = [event.text for event in turn.events() if isinstance(event, Delta)]
    assert len(snapshots) == len(deltas)
    last = snapshots[-1].messages[-1]
    assert last.stopped and last.text == "".join(deltas) and conversation.messages[-1].role == "user"


def test_ctrl_c_in_a_line_front_end_records_the_answer_so_far_as_stopped_and_propagates(tiny_engine) -> None:
    conversation, cancel = asked(LONG), threading.Event()
    chunks: list[str] = []

    def on_chunk(chunk: str) -> None:
        chunks.append(chunk)
        if len(chunks) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stream_answer(tiny_engine, conversation, cancel=cancel, on_chunk=on_chunk)
    answer = conversation.messages[-1]
    assert cancel.is_set() and answer.role == "assistant" and answer.stopped and answer.text == "".join(chunks)
