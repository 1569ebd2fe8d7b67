"""torch and torchvision from different builds: one line that says so and how to fix it (issue 26, item 1).

A torchvision built for another torch fails inside its own import (which timm and
transformers make) with only ``RuntimeError: operator torchvision::nms does not
exist``. Here a finder first in ``sys.meta_path`` raises that very error where
torchvision is imported, in a subprocess, and every way a model loads must say
what happened and give the command that fixes it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from process_support import PROCESS_TIMEOUT

from engine.errors import REINSTALL_TORCH, LibraryMismatchError, library_mismatch

ROOT = Path(__file__).resolve().parents[1]
NMS = "operator torchvision::nms does not exist"
BROKEN_TORCHVISION = f"""
import sys

class MismatchedTorchvision:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torchvision":
            raise RuntimeError({NMS!r})
        return None

sys.meta_path.insert(0, MismatchedTorchvision())
"""


def _run(code: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSVL_MODEL", "DSVL_DEVICE", "DSVL_ENDPOINT"))}
    return subprocess.run([sys.executable, "-c", BROKEN_TORCHVISION + code, *args], input=stdin, capture_output=True,
                          text=True, env={**env, "PYTHONPATH": str(ROOT)}, timeout=PROCESS_TIMEOUT)


def _is_the_line(line: str) -> None:
    """The one line: both versions, what failed, and the command."""
    import importlib.metadata

    assert "\n" not in line
    assert line.startswith(f"torch {importlib.metadata.version('torch')}")
    assert f"and torchvision {importlib.metadata.version('torchvision')}" in line
    assert f"come from different builds ({NMS}); reinstall both from one index: {REINSTALL_TORCH} " in line


@pytest.mark.slow
def test_engine_load_says_the_builds_differ(tmp_path: Path) -> None:
    code = """
import engine
try:
    engine.load(sys.argv[1], device="cpu")
except engine.LibraryMismatchError as exc:
    assert type(exc.__cause__) is RuntimeError, exc.__cause__
    print(exc)
"""
    run = _run(code, str(tmp_path))
    assert run.returncode == 0, run.stderr
    _is_the_line(run.stdout.rstrip("\n"))


@pytest.mark.slow
def test_load_backend_says_the_builds_differ(tmp_path: Path) -> None:
    code = """
from dsvl_tui.backends.choose import load_backend
from dsvl_tui.core.options import Options
import engine
try:
    load_backend(Options(model=sys.argv[1], device="cpu"))
except engine.LibraryMismatchError as exc:
    print(exc)
"""
    run = _run(code, str(tmp_path))
    assert run.returncode == 0, run.stderr
    _is_the_line(run.stdout.rstrip("\n"))


@pytest.mark.slow
def test_ask_exits_4_with_the_one_line(tmp_path: Path) -> None:
    run = _run("from dsvl_tui.cli import main\nmain(sys.argv[1:])\n",
               "ask", "--quiet", "--model", str(tmp_path), "--device", "cpu", "hi")
    assert run.returncode == 4  # "the model failed: it could not be loaded" (README, ask's exit codes)
    assert run.stdout == ""
    [line] = run.stderr.splitlines()
    assert line.startswith("error: ")
    _is_the_line(line.removeprefix("error: "))


@pytest.mark.slow
def test_the_plain_repl_says_it_and_exits_4(tmp_path: Path) -> None:
    run = _run("from dsvl_tui.cli import main\nmain(sys.argv[1:])\n",
               "--plain", "--model", str(tmp_path), "--device", "cpu", stdin="hi\n")
    assert run.returncode == 4, run.stderr  # README: "4 when the model did not load"
    said = [line for line in run.stderr.splitlines() if "different builds" in line]
    assert said, run.stderr
    _is_the_line(said[0][said[0].index("torch "):])


# --- what counts as the mismatch ------------------------------------------------------------------------

@pytest.mark.parametrize("exc", [RuntimeError("CUDA out of memory"), ImportError(NMS), ValueError("torchvision")])
def test_other_failures_go_through_as_they_were(exc: BaseException) -> None:
    assert library_mismatch(exc) is None


def test_a_cuda_version_mismatch_counts_too() -> None:
    error = library_mismatch(RuntimeError("Detected that PyTorch and torchvision were compiled with different CUDA "
                                          "major versions. PyTorch has CUDA Version=11.8 and torchvision has "
                                          "CUDA Version=12.1."))
    assert isinstance(error, LibraryMismatchError) and REINSTALL_TORCH in str(error)


def test_the_torch_torchvision_wants_is_named_when_it_pins_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    real = importlib.metadata.requires
    monkeypatch.setattr(importlib.metadata, "requires",
                        lambda name: ["numpy", "torch==2.4.0", "pillow"] if name == "torchvision" else real(name))
    assert "(made for torch==2.4.0) come from different builds" in str(library_mismatch(RuntimeError(NMS)))


# --- one recipe: the README's, which CONTRIBUTING repeats and the error gives -----------------------------

def test_one_install_recipe() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    contributing = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    recipe = REINSTALL_TORCH.replace(" --force-reinstall", "")
    assert f"`{recipe}`" in readme  # the CPU row of the Set-up table
    assert f"`{REINSTALL_TORCH}`" in readme  # what to do about the mismatch
    torch_installs = re.findall(r"`(pip install [^`]*torch[^`]*)`", contributing)
    assert torch_installs == [recipe], torch_installs
