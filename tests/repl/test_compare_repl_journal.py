"""The plain REPL journals ``/compare``'s compared answer as it streams (issue 25): after the main answer is
done and while the compared one still streams, the journal holds it so far on the main answer, marked
stopped (so kill -9 keeps it); once it ends, the journal holds it whole."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

from process_support import PROCESS_TIMEOUT
from tui_support import CompareSides

from dsvl_tui.core.options import Options
from dsvl_tui.repl.app import Repl
from dsvl_tui.storage import autosave


def _answer(data: Path) -> dict:
    """The journaled answer to the one question ({} before there is one)."""
    for path in (data / "journal").glob("*.json"):
        try:
            messages = json.loads(path.read_text("utf-8"))["messages"]
        except (OSError, ValueError):  # written atomically, but looked at between the glob and the read
            return {}
        return messages[1] if len(messages) > 1 else {}
    return {}


def _until(condition, what: str) -> None:
    """Wait for ``condition`` (polled); a generous bound only so that a failure ends the test."""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        threading.Event().wait(0.02)


def test_a_compared_answer_outlasting_the_main_one_is_journaled_as_it_streams(private_dirs, monkeypatch) -> None:
    monkeypatch.setattr(autosave, "PARTIAL_SAVE_SECONDS", 0.0)  # a checkpoint at every chunk
    backend = CompareSides(["Main", " answer."], ["Other", " side", " ends."])
    out, err = io.StringIO(), io.StringIO()
    repl = Repl(Options(model="tiny"), engine_factory=lambda model, progress: backend, stdout=out, stderr=err,
                stdin=io.StringIO("/compare --temperature 0.9\nWhat is red?\n"), colour=False)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(repl.run()), daemon=True)
    runner.start()
    backend.steps[0].set()  # the compared answer says its first chunk, then waits
    _until(lambda: len(repl.conversation.messages) == 2, "the main answer kept")
    backend.steps[1].set()  # its next chunk comes after the main answer ended
    _until(lambda: _answer(private_dirs.data).get("compared", {}).get("text") == "Other side", "the second chunk")
    answer = _answer(private_dirs.data)
    assert answer["text"] == "Main answer." and not answer["stopped"]  # the main answer, complete
    assert answer["compared"]["stopped"] is True  # so far: a kill now keeps it as a stopped answer
    backend.steps[2].set()
    runner.join()
    assert codes == [0], err.getvalue()
    final = _answer(private_dirs.data)["compared"]
    assert final["text"] == "Other side ends." and final["stopped"] is False
    assert repl.conversation.messages[1].compared is not None
    assert repl.conversation.messages[1].compared.text == "Other side ends."


def test_while_both_stream_the_journal_holds_both_so_far(private_dirs, monkeypatch) -> None:
    monkeypatch.setattr(autosave, "PARTIAL_SAVE_SECONDS", 0.0)  # a checkpoint at every chunk
    backend = CompareSides(["Main", " answer."], ["Other", " side."], hold_after=1)
    repl = Repl(Options(model="tiny"), engine_factory=lambda model, progress: backend, stdout=io.StringIO(),
                stderr=io.StringIO(), stdin=io.StringIO("/compare --temperature 0.9\nWhat is red?\n"), colour=False)
    runner = threading.Thread(target=repl.run, daemon=True)
    runner.start()
    backend.steps[0].set()

    def both_so_far() -> bool:
        answer = _answer(private_dirs.data)
        return answer.get("text") == "Main" and answer.get("compared", {}).get("text") == "Other"

    _until(both_so_far, "both answers' first chunks in one journal entry")
    answer = _answer(private_dirs.data)
    assert answer["stopped"] is True and answer["compared"]["stopped"] is True
    assert backend.gate is not None
    backend.gate.set()
    backend.steps[1].set()
    runner.join()
    answer = _answer(private_dirs.data)
    assert answer["text"] == "Main answer." and answer["compared"]["text"] == "Other side."
    assert not answer["stopped"] and not answer["compared"]["stopped"]
