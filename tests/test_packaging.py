"""The wheel ships what the source tree has: every package and module, every stylesheet, the theme files.

The expected list is computed from the tree, so a new subpackage without ``__init__.py``, a
stylesheet moved to a folder the build does not pick up, or a new top-level package that the
build configuration leaves out fails here, not on a user's machine after ``pip install``.
The wheel is built offline (``pip wheel --no-build-isolation``) from a copy of the tree, so no
``build/`` folder is left in the checkout and no stale one is reused; it takes a few seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from process_support import PROCESS_TIMEOUT

pytestmark = pytest.mark.slow  # pyproject.toml: spawns Python processes; not in the inner loop

ROOT = Path(__file__).resolve().parents[1]
# What a package folder ships besides its modules: stylesheets and themes (data read at run time).
DATA_SUFFIXES = (".tcss", ".json")
SCRIPT = "dsvl-chat = dsvl_tui.cli:main"


def top_level_packages(root: Path) -> list[str]:
    """The folders at the top of the tree that are Python packages (``engine``, ``dsvl_tui``, ``themes``)."""
    return sorted(path.parent.name for path in root.glob("*/__init__.py"))


def shipped_files(root: Path) -> set[str]:
    """Every module, stylesheet and JSON file under the top-level packages, as wheel paths."""
    files = set()
    for package in top_level_packages(root):
        for path in (root / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", *DATA_SUFFIXES):
                files.add(path.relative_to(root).as_posix())
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for path in ROOT.iterdir():  # the build's own files (pyproject, README, LICENSE...) and the packages
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, source / path.name)
    for package in top_level_packages(ROOT):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "--wheel-dir", str(out), str(source)], capture_output=True, text=True,
                          timeout=PROCESS_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    [built] = out.glob("dsvl_chat-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def test_the_expected_list_is_not_empty() -> None:
    """The tree walk finds what the app needs at run time (a guard against the test passing vacuously)."""
    assert top_level_packages(ROOT) == ["dsvl_tui", "engine", "themes"]
    files = shipped_files(ROOT)
    assert any(name.endswith(".tcss") for name in files)
    assert {"themes/dsvl-night.json", "themes/dsvl-paper.json"} <= files
    assert {"dsvl_tui/tui/widgets/__init__.py", "dsvl_tui/storage/transcript/__init__.py",
            "dsvl_tui/commands/builtin/__init__.py"} <= files


@pytest.mark.timeout(180)
def test_the_wheel_has_every_package_stylesheet_and_theme(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    missing = sorted(shipped_files(ROOT) - names)
    assert not missing, f"left out of the wheel: {missing}"
    tops = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert tops == set(top_level_packages(ROOT)), "the wheel's top-level folders differ from the tree's packages"


@pytest.mark.timeout(180)
def test_the_wheel_installs_the_command(wheel: zipfile.ZipFile) -> None:
    [entry_points] = [name for name in wheel.namelist() if name.endswith(".dist-info/entry_points.txt")]
    assert SCRIPT in wheel.read(entry_points).decode()
