"""``dsvl-chat ask`` end to end: a subprocess per case against a tiny real checkpoint.

Each run starts a Python that imports torch and transformers (seconds), so
the runs are few (one run serves several tests), they are started together,
two at a time, by one module fixture, and each test waits for its own. Torch
gets one thread per process: two processes on two cores with spinning
OpenMP threads each are several times slower than one after the other.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from process_support import PROCESS_TIMEOUT

import engine
from dsvl_tui.core.conversation import Conversation
from dsvl_tui.core.options import Options, resolvable_model
from dsvl_tui.core.text import printable
from dsvl_tui.repl.ask import AskRequest, run_ask
from dsvl_tui.storage.transcript import load_transcript, save_transcript
from engine.testing.random_checkpoints import write_checkpoint
from engine.types import GenerationSettings, GenerationStats

pytestmark = pytest.mark.slow  # pyproject.toml: spawns Python processes; not in the inner loop

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("ask")
    checkpoint = write_checkpoint(folder / "tiny", seed=11)
    image = folder / "red square.png"
    Image.new("RGB", (48, 32), "red").save(image)
    fake = folder / "notes.png"
    fake.write_text("a text file with an image's name")
    broken = folder / "broken.json"
    broken.write_text('{"format": "dsvl-chat.transcript", "version": 1, "messages": [{"role": ')
    earlier = Conversation(system="Be brief.", settings=GenerationSettings(temperature=0.7, top_k=9),
                           model=str(checkpoint))
    earlier.add_user("First question")
    earlier.add_answer("First answer", GenerationStats(new_tokens=2, stop_reason="eos"))
    continued = save_transcript(earlier, folder / "continued.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSVL_")}
    env.update(DSVL_DATA_DIR=str(folder / "data"), PYTHONPATH=str(ROOT), NO_COLOR="1", OMP_NUM_THREADS="1")
    return SimpleNamespace(folder=folder, checkpoint=checkpoint, image=image, fake=fake, broken=broken,
                           continued=continued, env=env)


def _ask(world, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # surrogateescape: a lone surrogate in an argument or in stdin goes out as the byte it stands for.
    return subprocess.run([sys.executable, "-m", "dsvl_tui.cli", "ask", *args], input=stdin, capture_output=True,
                          text=True, errors="surrogateescape", env={**world.env, **(env or {})}, cwd=world.folder,
                          timeout=PROCESS_TIMEOUT)


def _interrupted(world) -> tuple[subprocess.CompletedProcess[str], Path]:
    """A long answer stopped with SIGINT once it has started to stream."""
    transcript = world.folder / "interrupted.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "dsvl_tui.cli", "ask", "--model", str(world.checkpoint), "--max-new-tokens", "3000",
         "--transcript", str(transcript), "Tell me a long story."],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=world.env, cwd=world.folder)
    first = process.stdout.read(1)  # the answer has started
    process.send_signal(signal.SIGINT)
    rest, err = process.communicate(timeout=PROCESS_TIMEOUT)
    done = subprocess.CompletedProcess(process.args, process.returncode, (first + rest).decode(errors="replace"),
                                       err.decode(errors="replace"))
    return done, transcript


@pytest.fixture(scope="module")
def runs(world):
    model = ("--model", str(world.checkpoint))
    (world.folder / "not-a-model").mkdir(exist_ok=True)
    cases = {
        # The answering runs: each serves several tests.
        "text": dict(args=(*model, "--max-new-tokens", "12", "--transcript", "new.json", "-"),
                     stdin="A question\nover two lines\n"),
        "json": dict(args=(*model, "--max-new-tokens", "5", "--temperature", "0", "--json", "--image",
                           str(world.image), "--compile", "What is this?")),
        "continue": dict(args=("--max-new-tokens", "6", "--transcript", str(world.continued), "And then?")),
        "missing_model": dict(args=("--model", str(world.folder / "no-such-model"), "hi")),  # a usage error
        "unloadable_model": dict(args=("--model", str(world.folder / "not-a-model"), "hi")),
        "relative_model": dict(args=("--model", "tiny", "--max-new-tokens", "2", "--transcript", "relative.json",
                                     "hi")),  # run in world.folder, where tiny/ is
        # Bytes that are not UTF-8 (\udcff is the byte 0xFF), in the argument and on stdin (in a UTF-8 locale,
        # where Python's stdin would refuse them).
        "bad_byte_argument": dict(args=(*model, "--max-new-tokens", "3", "--transcript", "bad_arg.json",
                                        "caf\udce9 \udcff?")),
        "bad_byte_stdin": dict(args=(*model, "--max-new-tokens", "3", "--transcript", "bad_stdin.json", "-"),
                               stdin="caf\udce9\n\udcff?\n", env={"LC_ALL": "C.UTF-8"}),
        # Failing before the model loads: quick.
        "missing_image": dict(args=(*model, "-i", "nowhere.png", "hi")),
        "text_as_png": dict(args=(*model, "-i", str(world.fake), "hi")),
        "broken_transcript": dict(args=(*model, "--transcript", str(world.broken), "hi")),
        "bad_flag": dict(args=(*model, "--temperature", "hot", "hi")),
        "empty_question": dict(args=(*model, "   ")),
        "empty_stdin": dict(args=(*model, "-"), stdin="\n \n"),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures: dict[str, Future] = {"interrupted": pool.submit(_interrupted, world)}
        futures.update({name: pool.submit(_ask, world, *case["args"], stdin=case.get("stdin", ""),
                                          env=case.get("env"))
                        for name, case in cases.items()})
        yield futures


def _result(runs, name: str) -> subprocess.CompletedProcess[str]:
    return runs[name].result()


# --- answers -------------------------------------------------------------------------------


def test_text_answer_on_stdout_progress_on_stderr(runs, world) -> None:
    done = _result(runs, "text")
    assert done.returncode == 0, done.stderr
    answer = load_transcript(world.folder / "new.json").messages[-1]
    assert done.stdout.rstrip("\n") == printable(answer.text).rstrip("\n")  # the answer and nothing else
    assert done.stdout.endswith("\n") and "\x1b" not in done.stdout
    assert f"loading {world.checkpoint}" in done.stderr and "ready" in done.stderr
    assert "12 tokens" in done.stderr


def test_question_from_stdin_into_a_new_transcript(runs, world) -> None:
    assert _result(runs, "text").returncode == 0
    question, answer = load_transcript(world.folder / "new.json").messages
    assert question.text == "A question\nover two lines"
    assert answer.stats.new_tokens == 12 and answer.stats.stop_reason == "length"


def test_json_with_an_image(runs, world) -> None:
    done = _result(runs, "json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    document = json.loads(lines[0])
    assert isinstance(document["answer"], str) and document["answer"]
    assert document["stats"]["new_tokens"] == 5 and document["stats"]["stop_reason"] == "length"
    assert document["model"] == str(world.checkpoint)
    assert document["settings"]["temperature"] == 0 and document["settings"]["max_new_tokens"] == 5
    assert document["settings"]["top_p"] == 0.95  # defaults filled in
    assert document["stopped"] is False and document["error"] is None
    assert document["images"] == [str(world.image)]
    assert "compile: not used (needs CUDA), decoding eagerly" in done.stderr  # on the CPU it says so and answers
    # The image took its slots in the prompt.
    text_only = engine.load(str(world.checkpoint)).prepare([engine.Message("user", "What is this?")])
    assert document["stats"]["prompt_tokens"] > len(text_only.input_ids)


def test_transcript_is_continued_and_appended(runs, world) -> None:
    done = _result(runs, "continue")
    assert done.returncode == 0, done.stderr
    saved = load_transcript(world.continued)
    assert [m.text for m in saved.messages[:3]] == ["First question", "First answer", "And then?"]
    assert len(saved.messages) == 4 and saved.messages[3].stats.new_tokens == 6
    # The transcript's own model, system prompt and settings were kept; the flag given changed one.
    assert saved.system == "Be brief." and saved.model == str(world.checkpoint)
    assert (saved.settings.temperature, saved.settings.top_k, saved.settings.max_new_tokens) == (0.7, 9, 6)


def test_a_transcript_of_a_local_model_named_relatively_continues_from_another_folder(runs, world) -> None:
    done = _result(runs, "relative_model")
    assert done.returncode == 0, done.stderr
    transcript = world.folder / "relative.json"
    assert load_transcript(transcript).model == str(world.checkpoint.resolve())  # not "tiny"
    elsewhere = world.folder / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    again = subprocess.run([sys.executable, "-m", "dsvl_tui.cli", "ask", "--max-new-tokens", "2", "--transcript",
                            str(transcript), "And?"], capture_output=True, text=True, env=world.env, cwd=elsewhere,
                           timeout=PROCESS_TIMEOUT)
    assert again.returncode == 0, again.stderr
    assert [m.text for m in load_transcript(transcript).messages][::2] == ["hi", "And?"]


def test_resolvable_model_makes_folders_absolute_and_leaves_hub_ids(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ck").mkdir()
    assert resolvable_model("ck") == str((tmp_path / "ck").resolve())
    assert resolvable_model("deepseek-ai/deepseek-vl-1.3b-chat") == "deepseek-ai/deepseek-vl-1.3b-chat"
    assert resolvable_model("no-such-folder") == "no-such-folder"


@pytest.mark.parametrize(("case", "saved", "question"), [
    ("bad_byte_argument", "bad_arg.json", "caf\ufffd \ufffd?"),
    ("bad_byte_stdin", "bad_stdin.json", "caf\ufffd\n\ufffd?"),
])
def test_bytes_that_are_not_utf8_become_replacement_characters_and_get_an_answer(
        runs, world, case: str, saved: str, question: str) -> None:
    done = _result(runs, case)
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr and "Traceback" not in done.stderr
    user, answer = load_transcript(world.folder / saved).messages
    assert user.text == question
    # Valid when it was saved (a lone surrogate would have been written as a \udce9 escape).
    assert "caf\ufffd" in (world.folder / saved).read_text(encoding="utf-8")
    assert answer.stats.new_tokens == 3 and done.stdout.strip()


def test_ctrl_c_exits_130_with_the_partial_answer_kept(runs) -> None:
    done, transcript = _result(runs, "interrupted")
    assert done.returncode == 130, done.stderr
    assert done.stderr.rstrip().endswith("interrupted")
    answer = load_transcript(transcript).messages[-1]
    assert answer.stopped and 0 < answer.stats.new_tokens < 3000


# --- errors and exit codes ----------------------------------------------------------------------


@pytest.mark.parametrize(("case", "code", "message"), [
    ("missing_image", 3, "error: image not found: nowhere.png"),
    ("text_as_png", 3, "error: not an image file"),
    ("broken_transcript", 3, "broken.json"),
    ("missing_model", 2, "error: Invalid value for '--model': model folder not found:"),
    ("unloadable_model", 4, "not-a-model"),
    ("bad_flag", 2, "error: Invalid value for '--temperature'"),
    ("empty_question", 3, "error: the question is empty"),
    ("empty_stdin", 3, "error: the question is empty"),
])
def test_errors_are_one_line_with_their_exit_code(runs, case: str, code: int, message: str) -> None:
    done = _result(runs, case)
    assert done.returncode == code, done.stderr
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_input_is_checked_before_the_model_loads(runs) -> None:
    for case in ("missing_image", "text_as_png", "broken_transcript", "empty_question"):
        assert "loading" not in _result(runs, case).stderr


def test_a_generation_failure_exits_4_after_the_partial_answer(tmp_path, monkeypatch, world) -> None:
    """In process: the real engine, made to fail part way as a worker crash would."""
    real = engine.load(str(world.checkpoint))

    class Failing:
        info = real.info

        def stream(self, messages, settings, *, system=None, cancel=None, cache_key="default"):
            inner = real.stream(messages, settings, system=system, cancel=cancel)

            class Stream:
                stats = inner.stats
                token_ids = inner.token_ids
                close = inner.close

                def __iter__(self):
                    for index, chunk in enumerate(inner):
                        if index == 3:
                            inner.close()
                            raise engine.GenerationError("out of GPU memory while generating")
                        yield chunk

            return Stream()

    monkeypatch.setattr(engine, "load", lambda *args, **kwargs: Failing())
    monkeypatch.setenv("DSVL_DATA_DIR", str(tmp_path))
    out, err = io.StringIO(), io.StringIO()
    request = AskRequest(options=Options(model="tiny", settings=GenerationSettings(max_new_tokens=50)),
                         question="hi", transcript=tmp_path / "t.json")
    assert run_ask(request, stdout=out, stderr=err) == 4
    assert err.getvalue().splitlines()[-1] == "error: out of GPU memory while generating"
    assert out.getvalue().strip()  # what came before the failure was printed
    answer = load_transcript(tmp_path / "t.json").messages[-1]
    assert answer.error == "out of GPU memory while generating" and answer.text
