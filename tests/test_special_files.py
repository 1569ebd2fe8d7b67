"""FIFOs, devices and folders where a file is expected: refused at once with one line, never a hang.

Every in-process test arms a rescuer first: if the code under test does block
opening the FIFO, the rescuer opens its other end after a few seconds, so the
test fails on its time limit instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from process_support import PROCESS_TIMEOUT
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from tui_support import ScriptedEngine, notices, run_async, scripted_app, type_line, wait_for

import engine
from dsvl_tui.core.conversation import Attachment
from dsvl_tui.core.options import Options
from dsvl_tui.repl.app import Repl, default_engine_factory
from dsvl_tui.repl.load_progress import ModelSlot
from dsvl_tui.storage.config import load_config
from dsvl_tui.storage.journal import Journal
from engine.files import (
    FileTooLargeError,
    NotRegularFileError,
    UnusableFileError,
    open_beneath,
    open_regular,
    read_regular,
)
from engine.images import load_image

ROOT = Path(__file__).resolve().parents[1]
QUICK = 2.0  # seconds: a refusal is a stat and an open, far below this
RESCUE_AFTER = 4.0

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")]


_RESCUER = """
import contextlib, os, sys, time
time.sleep(float(sys.argv[1]))
while True:
    for fifo in sys.argv[2:]:
        # Read-write never blocks on Linux, and counts as the writer a blocked reader waits for.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
    time.sleep(0.05)
"""


@contextlib.contextmanager
def rescued(*fifos: Path) -> Iterator[None]:
    """Unblock anything stuck opening one of ``fifos`` after RESCUE_AFTER seconds.

    A separate process, since a blocked call may hold the GIL (tokenizers' from_file does).
    """
    rescuer = subprocess.Popen([sys.executable, "-c", _RESCUER, str(RESCUE_AFTER), *map(str, fifos)])
    try:
        yield
    finally:
        rescuer.kill()
        rescuer.wait()


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@contextlib.contextmanager
def quickly(limit: float = QUICK) -> Iterator[None]:
    started = time.monotonic()
    yield
    took = time.monotonic() - started
    assert took < limit, f"took {took:.1f} s: it blocked"


@pytest.fixture
def good(tiny_siglip: Path) -> Path:
    return tiny_siglip  # shared (conftest): the tests copy it before changing it


# --- the helper --------------------------------------------------------------------


def test_open_regular_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    pipe = fifo(tmp_path / "pipe")
    cases = {pipe: "a named pipe (FIFO)", Path("/dev/null"): "a character device",
             Path("/dev/zero"): "a character device", tmp_path: "a folder"}
    with rescued(pipe), quickly():
        for path, kind in cases.items():
            with pytest.raises(NotRegularFileError) as caught:
                open_regular(path)
            assert str(caught.value) == f"{path}: is {kind}, not a regular file"
            assert isinstance(caught.value, OSError)  # callers' OSError handlers apply
    (tmp_path / "real").write_bytes(b"data")
    os.symlink(tmp_path / "real", tmp_path / "link")
    with open_regular(tmp_path / "link") as handle:
        assert handle.read() == b"data"
    with pytest.raises(UnusableFileError, match="symbolic link"):
        open_regular(tmp_path / "link", follow_symlinks=False)
    with pytest.raises(FileTooLargeError, match="larger than 3 bytes"):
        read_regular(tmp_path / "real", 3)
    assert read_regular(tmp_path / "real", 4) == b"data"


def test_open_beneath_follows_no_link_below_its_root(tmp_path: Path) -> None:
    """What a transcript's image folder is opened with: a link met on the way is refused, never followed."""
    (tmp_path / "secret").write_bytes(b"key")
    (tmp_path / "chat.images" / "sub").mkdir(parents=True)
    (tmp_path / "chat.images" / "sub" / "a.png").write_bytes(b"png")
    with open_beneath(tmp_path, ["chat.images", "sub", "a.png"]) as handle:
        assert handle.read() == b"png"
    (tmp_path / "chat.images" / "b.png").symlink_to(tmp_path / "secret")
    (tmp_path / "chat.images" / "link").symlink_to(tmp_path / "chat.images" / "sub")  # even one that stays inside
    (tmp_path / "linked.images").symlink_to(tmp_path / "chat.images")
    for parts in (["chat.images", "b.png"], ["chat.images", "link", "a.png"], ["linked.images", "sub", "a.png"]):
        with pytest.raises(UnusableFileError, match="symbolic link") as caught:
            open_beneath(tmp_path, parts)
        assert "\n" not in str(caught.value)
    pipe = tmp_path / "chat.images" / "pipe.png"
    os.mkfifo(pipe)
    with rescued(pipe), quickly(), pytest.raises(UnusableFileError, match="named pipe"):
        open_beneath(tmp_path, ["chat.images", "pipe.png"])


def test_importing_the_helper_imports_no_torch() -> None:
    code = "import engine.files, sys; assert 'torch' not in sys.modules and 'PIL' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=PROCESS_TIMEOUT)


# --- images -----------------------------------------------------------------------------


def test_load_image_refuses_a_fifo_at_once(tmp_path: Path) -> None:
    pipe = fifo(tmp_path / "fifo.png")
    with rescued(pipe), quickly(), pytest.raises(engine.ImageError) as caught:
        load_image(pipe)
    message = str(caught.value)
    assert "named pipe (FIFO), not a regular file" in message and str(pipe) in message and "\n" not in message


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_load_image_refuses_character_devices(device: str) -> None:
    with quickly(), pytest.raises(engine.ImageError, match=f"character device, not a regular file: {device}"):
        load_image(device)


def test_image_hash_refuses_a_fifo(tmp_path: Path) -> None:
    pipe = fifo(tmp_path / "fifo.png")
    with rescued(pipe), quickly(), pytest.raises(OSError, match="named pipe"):
        Attachment.from_path(pipe)


def test_ask_with_a_fifo_image_exits_3_at_once(tmp_path: Path, good: Path) -> None:
    pipe = fifo(tmp_path / "fifo.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSVL_")}
    env.update(DSVL_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT), NO_COLOR="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "dsvl_tui.cli", "ask", "--model", str(good), "--image", str(pipe),
                           "What is this?"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=PROCESS_TIMEOUT)
    assert done.returncode == 3, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "named pipe" in errors[0] and "fifo.png" in errors[0], done.stderr
    assert "loading" not in done.stderr


# --- checkpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json", "preprocessor_config.json"])
def test_a_fifo_in_a_checkpoint_is_refused_and_a_good_load_still_works(tmp_path: Path, good: Path, name: str) -> None:
    bad = Path(shutil.copytree(good, tmp_path / "bad"))
    (bad / name).unlink()
    pipe = fifo(bad / name)
    with rescued(pipe), quickly(), pytest.raises(engine.CheckpointError) as caught:
        engine.load(str(bad), device="cpu")
    message = str(caught.value)
    assert f"{pipe}: is a named pipe (FIFO), not a regular file" in message and "\n" not in message
    eng = engine.load(str(good), device="cpu")  # the same process loads the next model as usual
    assert eng.info.parameters > 0


@pytest.mark.parametrize(("name", "device"), [("model.safetensors", "/dev/zero"), ("config.json", "/dev/null")])
def test_a_device_in_a_checkpoint_is_refused(tmp_path: Path, good: Path, name: str, device: str) -> None:
    bad = Path(shutil.copytree(good, tmp_path / "bad"))
    (bad / name).unlink()
    os.symlink(device, bad / name)
    with quickly(), pytest.raises(engine.CheckpointError, match="is a character device, not a regular file"):
        engine.load(str(bad), device="cpu")


def _repl(keys: str, tmp_path: Path) -> str:
    """What the plain REPL (with the real loader) writes to stderr for ``keys``."""
    out, errors = io.StringIO(), io.StringIO()
    options = Options(model=str(tmp_path / "none-yet"), device="cpu")
    with create_pipe_input() as pipe:
        pipe.send_text(keys + "\x04")
        Repl(options, engine_factory=default_engine_factory(options), input=pipe, output=DummyOutput(),
             stdout=out, stderr=errors).run()
    return errors.getvalue()


def test_the_repl_loads_a_model_after_a_fifo_checkpoint_failed(tmp_path: Path, good: Path) -> None:
    """The REPL's model slot (what /model drives) with the real loader: the FIFO load ends, the next one works."""
    bad = Path(shutil.copytree(good, tmp_path / "bad"))
    (bad / "model.safetensors").unlink()
    pipe = fifo(bad / "model.safetensors")
    events: list[tuple[str, str]] = []
    slot = ModelSlot(default_engine_factory(Options(model=str(bad), device="cpu")),
                     lambda kind, message: events.append((kind, message)))
    never = threading.Event()
    with rescued(pipe), quickly():
        slot.load(str(bad))
        assert slot.wait(never) is None
    assert slot.error is not None and "named pipe (FIFO), not a regular file" in slot.error, slot.error
    slot.load(str(good))  # no "still loading": the failed load let go of the slot
    assert slot.wait(never) is not None and slot.model == str(good)
    assert [kind for kind, _ in events if kind != "progress"] == ["error", "ready"]


def test_load_refuses_a_fifo_transcript(tmp_path: Path, good: Path) -> None:
    pipe = fifo(tmp_path / "chat.json")
    with rescued(pipe), quickly(10.0):  # the REPL's own start-up included
        err = _repl(f"/load {pipe}\r", tmp_path)
    assert "not a regular file" in err and "chat.json" in err, err


# --- the app's own files ---------------------------------------------------------------------------


def test_a_fifo_in_the_journal_or_as_the_config_is_skipped(tmp_path: Path, private_dirs) -> None:
    private_dirs.config.mkdir()
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    pipes = fifo(journal_dir / "0123abcd.json"), fifo(private_dirs.config / "config.json")
    with rescued(*pipes), quickly():
        assert Journal(journal_dir).recent() == []
        assert load_config() == {}


# --- the TUI ---------------------------------------------------------------------------------------------


@run_async
async def test_tui_image_command_with_a_fifo_answers_with_an_error_at_once(tmp_path: Path) -> None:
    pipe = fifo(tmp_path / "fifo.png")
    photo = tmp_path / "ok.png"
    Image.new("RGB", (16, 16), "green").save(photo)
    app = scripted_app(ScriptedEngine())
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.engine is not None)
        with rescued(pipe), quickly():
            await type_line(pilot, f"/image {pipe}")
            await pilot.pause()
        (error,) = notices(app, error=True)
        assert "named pipe (FIFO), not a regular file" in error and "fifo.png" in error and "\n" not in error
        await type_line(pilot, f"/image {photo}")  # the app carries on
        assert [a.label for a in app.active.conversation.pending] == ["ok.png"]
