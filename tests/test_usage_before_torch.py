"""Usage errors in the engine's options come before torch is imported (issue 26, item 6).

``--device tpu`` or ``--model /nonexistent`` used to be reported only once torch,
transformers and timm were imported (17 to 58 s on a busy machine), and
``--device tpu`` as a failed load (exit 4). Every command checks them first: the
CLI runs here in a subprocess whose imports of torch and its kind fail, and must
still give exit code 2 and the one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from process_support import PROCESS_TIMEOUT

# A finder first in sys.meta_path that refuses the heavy imports: the CLI must decide without them.
NO_HEAVY_IMPORTS = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "timm", "torchvision", "textual", "prompt_toolkit"):
            raise ImportError("the test forbids importing " + name)
        return None

sys.meta_path.insert(0, Refuse())
from dsvl_tui.cli import main
main(sys.argv[1:])
"""


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "HOME": str(cwd), **env}
    for name in ("DSVL_MODEL", "DSVL_DEVICE", "DSVL_DTYPE", "DSVL_ENDPOINT", "DSVL_QUANTIZE", "DSVL_COMPILE"):
        if name not in env:
            environ.pop(name, None)
    return subprocess.run([sys.executable, "-c", NO_HEAVY_IMPORTS, *args], capture_output=True, text=True,
                          cwd=cwd, env=environ, stdin=subprocess.DEVNULL, timeout=PROCESS_TIMEOUT)


DEVICE = "error: Invalid value for '--device': unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps"
DTYPE = "error: Invalid value for '--dtype': unknown dtype 'fp8'; use auto, bfloat16, float16 or float32"
MISSING = "error: Invalid value for '--model': model folder not found: {}; check the path"


@pytest.mark.slow
@pytest.mark.parametrize(("args", "line"), [
    (["ask", "--device", "tpu", "hi"], DEVICE),
    (["--device", "tpu", "ask", "hi"], DEVICE),  # given before the command
    (["ask", "--dtype", "fp8", "hi"], DTYPE),
    (["ask", "--model", "/nonexistent", "hi"], MISSING.format("/nonexistent")),
    (["--plain", "--model", "./nope"], MISSING.format("./nope")),
    (["--device", "tpu"], DEVICE),  # the full-screen app (the REPL here: no terminal)
    (["--model", "~/models/none"], MISSING.format("~/models/none")),
    (["serve", "--device", "tpu"], DEVICE),
    (["serve", "--model", "/nonexistent"], MISSING.format("/nonexistent")),
    (["web", "--dtype", "fp8"], DTYPE),
    (["web", "--model", "./nope"], MISSING.format("./nope")),
    (["bench", "--device", "tpu", "--skip-ui"], DEVICE),
])
def test_usage_errors_come_before_torch(tmp_path: Path, args: list[str], line: str) -> None:
    run = _run(args, tmp_path)
    assert run.returncode == 2, run.stderr
    [said] = run.stderr.splitlines()
    assert said.startswith(line), said
    assert run.stdout == ""


@pytest.mark.slow
def test_an_environment_variable_is_checked_too(tmp_path: Path) -> None:
    run = _run(["ask", "hi"], tmp_path, DSVL_DEVICE="tpu")
    assert run.returncode == 2 and run.stderr.startswith(DEVICE), run.stderr


@pytest.mark.slow
def test_a_file_is_not_a_model_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    run = _run(["ask", "--model", "config.json", "hi"], tmp_path)
    assert run.returncode == 2
    assert run.stderr.startswith("error: Invalid value for '--model': config.json is a file, not a model folder; "
                                 "pass the folder that holds config.json"), run.stderr


def test_with_an_endpoint_the_model_is_the_servers_name(tmp_path: Path) -> None:
    """With --endpoint, --model names the server's model, not a folder: no path check (the server answers)."""
    from dsvl_tui.cli import build_options

    options = build_options({"endpoint": "http://127.0.0.1:9/v1", "model": "deepseek-vl"})
    assert options.model == "deepseek-vl"


def test_endpoint_and_device_name_the_option_in_one_sentence() -> None:
    import typer

    from dsvl_tui.cli import build_options

    with pytest.raises(typer.BadParameter) as one:
        build_options({"endpoint": "http://127.0.0.1:9/v1", "device": "cuda"})
    assert str(one.value) == ("--device is for a model loaded here; with --endpoint the server chooses it: "
                              "leave it out (DSVL_DEVICE too)")
    with pytest.raises(typer.BadParameter) as two:
        build_options({"endpoint": "http://127.0.0.1:9/v1", "device": "cuda", "dtype": "float16"})
    assert str(two.value).startswith("--device, --dtype are for a model loaded here; with --endpoint the server "
                                     "chooses them: leave them out (DSVL_DEVICE, DSVL_DTYPE too)")


# --- the light checks and the engine's agree -------------------------------------------------------------

@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:12", "mps", "cpu:0"])
def test_the_check_takes_what_torch_takes(device: str) -> None:
    import torch

    from engine.types import check_device

    assert check_device(device) == device
    assert torch.device(device).type in ("cpu", "cuda", "mps")


@pytest.mark.parametrize("device", ["tpu", "CUDA", "cuda:x", "cuda:-1", "meta", "xla", "cuda:0 ", "gpu"])
def test_the_check_refuses_what_the_engine_refuses(device: str) -> None:
    import engine
    from engine.resolve import pick_device
    from engine.types import check_device

    with pytest.raises(ValueError, match="unknown device"):
        check_device(device)
    with pytest.raises(engine.EngineError, match="unknown device"):
        pick_device(device)
