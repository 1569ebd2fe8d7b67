"""``dsvl-chat ask --compare``: both answers printed, labelled, stats for each, and both in the transcript and
the JSON; two tiny real checkpoints, one subprocess per run (started together, two at a time)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from process_support import PROCESS_TIMEOUT

from dsvl_tui.core.options import Options
from dsvl_tui.repl.ask import EXIT_USAGE, AskRequest, run_ask
from dsvl_tui.storage.transcript import load_transcript
from engine.testing.random_checkpoints import write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # pyproject.toml: spawns Python processes; not in the inner loop


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("ask-compare")
    write_checkpoint(folder / "tiny-a", seed=1)
    write_checkpoint(folder / "tiny-b", seed=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSVL_")}
    env.update(DSVL_DATA_DIR=str(folder / "data"), PYTHONPATH=str(ROOT), NO_COLOR="1", OMP_NUM_THREADS="1")
    base = ("ask", "--model", "tiny-a", "--device", "cpu", "--temperature", "0")
    cases = {
        "text": (*base, "--max-new-tokens", "5", "--compare", "tiny-b", "--transcript", "both.json", "Hello there"),
        "json": (*base, "--max-new-tokens", "4", "--compare", "--temperature 0.9 --seed 3", "--json", "Hi"),
    }

    def run(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dsvl_tui.cli", *args], capture_output=True, text=True,
                              env=env, cwd=folder, timeout=PROCESS_TIMEOUT)

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(cases, pool.map(run, cases.values()), strict=True))
    return SimpleNamespace(folder=folder, **done)


def test_both_answers_are_printed_labelled_with_their_stats(runs) -> None:
    done = runs.text
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0] == "== tiny-a =="
    second = lines.index("== tiny-b ==")
    main_text, compared_text = "\n".join(lines[1:second]), "\n".join(lines[second + 1:]).rstrip("\n")
    saved = load_transcript(runs.folder / "both.json")
    answer = saved.messages[-1]
    assert answer.compared is not None and answer.compared.model == str(runs.folder / "tiny-b")
    assert answer.stats is not None and answer.compared.stats is not None
    assert answer.stats.new_tokens == answer.compared.stats.new_tokens == 5
    assert main_text.strip() and compared_text.strip() and answer.text != answer.compared.text
    # What it needs is said before the second model loads; then each answer's stats, labelled.
    err = done.stderr
    assert "tiny-b needs about " in err and "loading it to compare" in err
    assert err.index("loading it to compare") < err.index(f"{runs.folder / 'tiny-b'} ready")
    assert "\ntiny-a: 5 tokens" in err and "\ntiny-b: 5 tokens" in err and "first token" in err


def test_json_holds_the_compared_answer_on_the_one_engine(runs) -> None:
    done = runs.json
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    compared = document["compared"]
    assert compared["model"] == str(runs.folder / "tiny-a") and compared["quantize"] == "none"
    assert compared["settings"]["temperature"] == 0.9 and compared["settings"]["seed"] == 3
    assert document["settings"]["temperature"] == 0.0
    assert compared["stats"]["new_tokens"] == 4 and isinstance(compared["answer"], str) and compared["error"] is None
    assert "comparing on the one engine already loaded (tiny-a)" in done.stderr
    assert "building model" in done.stderr and done.stderr.count("building model") == 1  # loaded once


def test_a_bad_compare_is_a_usage_error_before_any_model_loads() -> None:
    err = io.StringIO()
    request = AskRequest(Options(model="/nowhere"), "hi", compare="tiny-b --colour red")
    assert run_ask(request, stdout=io.StringIO(), stderr=err) == EXIT_USAGE
    assert err.getvalue() == ("error: --compare: unknown option --colour; usage: /compare MODEL | --endpoint URL "
                              "[MODEL] [--quantize none|int8|int4] [--temperature T] [--top-p P] [--top-k K] "
                              "[--repetition-penalty R] [--max-new-tokens N] [--seed S] | /compare off\n")
