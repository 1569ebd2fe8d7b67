"""Autosave under faults: a kill or a quit mid-answer, a failing disk, two programs on one file."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from process_support import PROCESS_TIMEOUT
from tui_support import ScriptedEngine

from dsvl_tui.core.options import Options
from dsvl_tui.repl.app import Repl
from dsvl_tui.storage.journal import Journal

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the data folder is the test's own already (conftest.private_dirs)


def _repl(backend=None, lines: str = "") -> tuple[Repl, io.StringIO]:
    err = io.StringIO()
    repl = Repl(Options(model="tiny"), engine_factory=lambda model, progress: backend or ScriptedEngine(),
                stdin=io.StringIO(lines), stdout=io.StringIO(), stderr=err, colour=False)
    return repl, err


def _entry() -> dict:
    [path] = (Path(os.environ["DSVL_DATA_DIR"]) / "journal").glob("*.json")
    return json.loads(path.read_text())


# -- /save and another writer ------------------------------------------------------------


def test_save_refuses_a_file_another_program_changed_since_this_one_wrote_or_loaded_it(tmp_path):
    first, err1 = _repl()
    first.conversation.add_user("mine")
    first.handle("/save chat.json")
    assert "saved to" in err1.getvalue()
    second, err2 = _repl()
    second.handle("/load chat.json")
    second.conversation.add_user("theirs")
    second.handle("/save")  # its own file, unchanged since it loaded it: fine
    assert "error" not in err2.getvalue()
    theirs = (tmp_path / "chat.json").read_bytes()
    first.conversation.add_user("mine again")
    first.handle("/save")  # the file it last wrote was replaced by the other program
    [line] = [x for x in err1.getvalue().splitlines() if x.startswith("error")]
    assert "changed on disk" in line and "--force" in line
    assert (tmp_path / "chat.json").read_bytes() == theirs
    first.handle("/save --force")
    assert b"mine again" in (tmp_path / "chat.json").read_bytes()
    first.conversation.add_user("and more")
    first.handle("/save")  # its own write again: no complaint
    assert err1.getvalue().count("error") == 1


# -- the REPL's autosave ---------------------------------------------------------------------


class _Unblocking(ScriptedEngine):
    """Clears what blocks the journal folder when it is asked to answer, and records what the
    journal held at that moment."""

    def __init__(self, blocker: Path) -> None:
        super().__init__(["fine"])
        self.blocker = blocker
        self.journaled_before: list[list[str]] = []

    def stream(self, messages, settings=None, **kwargs):
        if self.blocker.is_file():
            self.blocker.unlink()
        else:
            self.journaled_before.append([m["text"] for m in _entry()["messages"]])
        return super().stream(messages, settings, **kwargs)


def test_repl_autosave_recovers_after_a_failure_and_journals_before_sending(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    blocker = data / "journal"
    blocker.write_text("a file where the journal folder goes")
    backend = _Unblocking(blocker)
    repl, err = _repl(backend, "one\ntwo\n")
    assert repl.run() == 0
    errors = [line for line in err.getvalue().splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "autosave failed" in errors[0]
    assert "autosave works again" in err.getvalue()
    assert [m["text"] for m in _entry()["messages"]] == ["one", "fine", "two", "fine"]
    assert backend.journaled_before == [["one", "fine", "two"]]  # the question is on disk before it is sent


def test_a_deleted_original_image_is_sent_from_the_journal_copy(tmp_path):
    picture = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), "blue").save(picture)

    class Deleting(ScriptedEngine):
        def stream(self, messages, settings=None, **kwargs):
            for message in messages:
                for image in message.images:
                    Image.open(io.BytesIO(image.data)).load()  # the checked bytes the engine decodes
            picture.unlink(missing_ok=True)  # the user tidies up after the first answer
            return super().stream(messages, settings, **kwargs)

    backend = Deleting(["ok"])
    repl, err = _repl(backend, f"/image {picture}\nwhat is this?\nand now?\n/save again.json\n")
    assert repl.run() == 0
    assert "error" not in err.getvalue()
    assert [m.text for m in repl.conversation.messages] == ["what is this?", "ok", "and now?", "ok"]
    assert len(backend.calls) == 2
    saved = json.loads((tmp_path / "again.json").read_text())
    assert (tmp_path / saved["messages"][0]["images"][0]["path"]).is_file()  # /save used the copy too


# -- kills in the middle of an answer ------------------------------------------------------

STREAMING_CHILD = """
import sys, time
from dsvl_tui.storage import autosave
autosave.PARTIAL_SAVE_SECONDS = 0.2
from dsvl_tui.core.options import Options
from dsvl_tui.repl.app import Repl
from engine.types import GenerationStats


class Endless:
    token_ids = ()

    def __init__(self, cancel):
        self.cancel, self.stats = cancel, GenerationStats()

    def close(self):
        pass

    def __iter__(self):
        n = 0
        while not self.cancel.is_set():
            n += 1
            self.stats.new_tokens = n
            yield f"token{n} "
            time.sleep(0.005)
        self.stats.stop_reason = "cancelled"


class Backend:
    def stream(self, messages, settings=None, *, system=None, cancel=None, cache_key="default"):
        return Endless(cancel)


repl = Repl(Options(model="tiny"), engine_factory=lambda model, progress: Backend(), stdin=sys.stdin,
            stdout=sys.stdout, stderr=sys.stderr, colour=False)
sys.exit(repl.run())
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP])
def test_the_answer_so_far_is_journaled_when_the_repl_is_killed(tmp_path, how):
    env = {**os.environ, "DSVL_DATA_DIR": str(tmp_path / "data"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", STREAMING_CHILD], cwd=tmp_path, env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        child.stdin.write(b"tell me everything\n")
        child.stdin.flush()  # kept open: the REPL waits for more after the answer
        assert child.stdout.read(7) == b"token1 ", child.stderr.read()
        time.sleep(0.8)  # several periodic saves
        child.send_signal(how)
        code = child.wait(timeout=20)
    finally:
        child.kill()
        child.wait(timeout=10)
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()
    assert code == (-how if how == signal.SIGKILL else 128 + how)
    journal = Journal(tmp_path / "data" / "journal")
    conv = journal.open(journal.recent()[0])
    question, answer = conv.messages
    assert question.text == "tell me everything" and answer.stopped
    assert answer.text.startswith("token1 token2 ") and len(answer.text.split()) > 10


def test_a_bug_in_one_journal_write_is_reported_and_the_worker_goes_on(tmp_path):
    """A write that raised something other than OSError ended the worker: every later message waited for
    its journal write for ever, never drawn (seen when a test's stand-in took the wrong arguments)."""
    from dsvl_tui.core.conversation import Conversation
    from dsvl_tui.storage.autosave import Autosaver
    from dsvl_tui.storage.journal import Journal

    class Failing(Journal):
        calls = 0

        def record(self, conv, **options):
            Failing.calls += 1
            if Failing.calls == 1:
                raise RuntimeError("a bug")
            return super().record(conv, **options)

    reported: list[str] = []
    done = threading.Event()
    saver = Autosaver(Failing(), report=reported.append)
    worker = threading.Thread(target=saver.run)
    worker.start()
    conversation = Conversation()
    conversation.add_user("first")
    saver.save(conversation, then=lambda: None)
    conversation.add_user("second")
    saver.save(conversation, then=done.set)
    assert done.wait(PROCESS_TIMEOUT)  # the second write's callback ran: the worker lived on
    saver.stop()
    worker.join(PROCESS_TIMEOUT)
    assert len(reported) == 1 and reported[0].startswith("autosave failed:") and "a bug" in reported[0]
    assert Failing.calls == 2
