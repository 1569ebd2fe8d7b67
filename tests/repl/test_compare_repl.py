"""The plain REPL's ``/compare`` on two tiny real checkpoints: both answers printed, labelled, with their
stats, and both recorded (issue 25)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import engine
from dsvl_tui.core.options import Options
from dsvl_tui.core.text import printable
from dsvl_tui.repl.app import Repl
from dsvl_tui.storage.transcript import load_transcript
from engine.testing.random_checkpoints import write_checkpoint
from engine.types import GenerationSettings

pytestmark = pytest.mark.slow  # pyproject.toml: two models answer in the REPL, seconds a test


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("repl-compare")
    return write_checkpoint(folder / "tiny-a", seed=1), write_checkpoint(folder / "tiny-b", seed=2)


def _run(lines: str, first: Path, code: int = 0) -> tuple[Repl, str, str]:
    out, err = io.StringIO(), io.StringIO()
    options = Options(model=str(first), device="cpu", settings=GenerationSettings(max_new_tokens=4, temperature=0))
    repl = Repl(options, engine_factory=lambda model, progress: engine.load(model, device="cpu"), stdout=out,
                stderr=err, stdin=io.StringIO(lines), colour=False)
    assert repl.run() == code, err.getvalue()
    return repl, out.getvalue(), err.getvalue()


def test_compare_answers_with_both_and_records_both(checkpoints, tmp_path: Path) -> None:
    first, second = checkpoints
    saved = tmp_path / "both.json"
    repl, out, err = _run(f"/compare {second}\nWhat is red?\n/compare\n/save {saved}\n/compare off\nAnd blue?\n", first)
    asked, answer, _, last = repl.conversation.messages
    assert answer.compared is not None and answer.compared.model == str(second)
    assert answer.compared.stats is not None and answer.compared.stats.new_tokens == 4
    assert last.compared is None  # after /compare off, one answer
    # Said before it loads: what it needs and what is free; then each answer labelled, with its own stats.
    assert err.index("tiny-b needs about ") < err.index("loading it to compare") < err.index(f"{second} ready")
    assert "comparing with tiny-b: each message now goes to both" in err
    assert err.index("== tiny-a ==") < err.index("tiny-a: 4 tokens") < err.index("== tiny-b ==") \
        < err.index("tiny-b: 4 tokens")
    assert "\ncomparing with tiny-b\n" in err and "stopped comparing with tiny-b" in err
    assert out.index(printable(answer.text).strip()) < out.index(printable(answer.compared.text).strip())
    reloaded = load_transcript(saved)
    assert reloaded.messages[1].compared is not None
    assert reloaded.messages[1].compared.text == answer.compared.text


def test_the_same_model_with_other_settings_answers_on_the_one_engine(checkpoints) -> None:
    first, _ = checkpoints
    repl, _, err = _run("/compare --temperature 0.8 --seed 5\nHello\n/compare nonsense words\n/compare --top-k x\n",
                        first, code=1)  # piped, a refused line makes the exit code 1
    answer = repl.conversation.messages[1]
    assert answer.compared is not None and answer.compared.model == str(first)
    assert answer.compared.settings is not None and answer.compared.settings.temperature == 0.8
    assert "comparing on the one engine already loaded (tiny-a): the answers take turns (--max-batch 1)" in err
    assert "error: one model to compare with, not 'nonsense' and 'words'" in err
    assert "error: --top-k must be a whole number, not 'x'" in err
