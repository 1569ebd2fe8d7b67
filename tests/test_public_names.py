"""Nothing outside ``engine/`` imports a private name of the engine: ``engine/__init__`` and the modules'
public names are its API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [path for path in (ROOT / "scripts").iterdir() if path.is_file() and path.suffix in ("", ".py")]


def _python_files() -> list[Path]:
    files = [*(ROOT / "dsvl_tui").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    files += [path for path in SCRIPTS
              if path.suffix == ".py" or path.read_bytes()[:2] == b"#!" and b"python" in path.read_bytes()[:80]]
    return sorted(files)


def private_engine_imports(source: str) -> list[str]:
    """The private (underscore) engine names or modules that ``source`` imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] != "engine":
                continue
            found += [node.module for part in parts[1:] if part.startswith("_")]
            found += [f"{node.module}.{alias.name}" for alias in node.names if alias.name.startswith("_")]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "engine" and any(part.startswith("_") for part in parts[1:]):
                    found.append(alias.name)
    return found


def test_the_check_finds_private_names():
    found = private_engine_imports("from engine.checkpoint import _assign, original_key")
    assert found == ["engine.checkpoint._assign"]
    assert private_engine_imports("import engine._hidden.thing") == ["engine._hidden.thing"]
    assert private_engine_imports("from engine._hidden import x") == ["engine._hidden"]
    assert private_engine_imports("def f():\n    from engine.prompt import _plain\n") == ["engine.prompt._plain"]
    assert private_engine_imports("from engine.types import GenerationStats\nfrom dsvl_tui._x import _y") == []


@pytest.mark.parametrize("path", _python_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_private_engine_name_is_imported(path: Path):
    assert private_engine_imports(path.read_text(encoding="utf-8")) == [], f"{path}: import public names only"
