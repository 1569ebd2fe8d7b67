"""A newcomer joins a batch whose answer has already grown its buffers (found by the app's tabs answering together).

The batch's key/value buffers grow ``BatchCache.CHUNK`` positions at a time
inside a decode step, so once a running answer has passed a chunk they are
inference tensors; a newcomer's row was written into them outside inference
mode, which failed the running answer and left the newcomer's stream waiting
for ever.
"""

from __future__ import annotations

import threading

import engine
from engine.types import GenerationSettings, Message

LONG = GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=3000, ignore_eos=True)
WAIT = 120  # seconds: a busy machine; a stream that hangs fails here instead of hanging the run


class Reader(threading.Thread):
    """Reads one stream in its own thread, counting chunks."""

    def __init__(self, stream) -> None:
        super().__init__(daemon=True)
        self.stream, self.chunks, self.error = stream, 0, None
        self.started_reading = threading.Event()

    def run(self) -> None:
        try:
            for _chunk in self.stream:
                self.chunks += 1
                self.started_reading.set()
        except Exception as exc:  # noqa: BLE001 - the test reads it
            self.error = exc
        self.started_reading.set()


def test_a_newcomer_joins_after_the_running_answer_has_passed_a_chunk_of_the_cache(tiny_siglip):
    eng = engine.load(str(tiny_siglip), device="cpu", max_batch=2)
    first_cancel, second_cancel = threading.Event(), threading.Event()
    first = Reader(eng.stream([Message("user", "first")], LONG, cancel=first_cancel, cache_key="a"))
    first.start()
    deadline = threading.Event()
    while first.stream.stats.new_tokens < 300 and first.is_alive():  # past the first 256 positions
        deadline.wait(0.01)
    second = Reader(eng.stream([Message("user", "second")], LONG, cancel=second_cancel, cache_key="b"))
    second.start()
    assert second.started_reading.wait(WAIT), "the newcomer never streamed"
    assert first.error is None and second.error is None
    first_cancel.set()
    second_cancel.set()
    first.join(WAIT)
    second.join(WAIT)
    assert not first.is_alive() and not second.is_alive(), "a stream was left waiting"
    assert first.error is None and second.error is None
    assert first.stream.stats.stop_reason == second.stream.stats.stop_reason == "cancelled"
