"""No library warnings on stderr when a front end loads a local model (issue 26, item 10).

Importing transformers imports torchao where it is installed (a dependency, for
--quantize), and torchao registers Enum types with torch's pytree, which torch
logs as deprecated: two ``W... _pytree.py:630] ... is an Enum subclass ...``
lines at every start. ``engine`` silences that logger when it is imported, which
every front end does before the model code; these check it for the REPL and
``ask`` as users start them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from process_support import PROCESS_TIMEOUT

pytestmark = pytest.mark.slow  # pyproject.toml: spawns Python processes; not in the inner loop

ROOT = Path(__file__).resolve().parents[1]
LIBRARY_LOG = re.compile(r"^[WEI]\d{4} |_pytree|Enum subclass|Warning:", re.MULTILINE)


@pytest.mark.parametrize("argv", [["--plain"], ["ask", "hi"]])
def test_a_local_model_starts_without_library_warnings(tiny_siglip: Path, argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSVL_MODEL", "DSVL_ENDPOINT", "TORCH_LOGS"))}
    run = subprocess.run([sys.executable, "-m", "dsvl_tui.cli", "--model", str(tiny_siglip), "--device", "cpu",
                          "--max-new-tokens", "2", *argv], input="hi\n", capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(ROOT)}, timeout=PROCESS_TIMEOUT)
    assert run.returncode == 0, run.stderr
    assert "ready on cpu" in run.stderr  # the load happened (its progress lines are on stderr)
    assert not LIBRARY_LOG.search(run.stderr), run.stderr
