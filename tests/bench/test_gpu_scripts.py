"""The GPU check on a box without network (issue 21): scripts/gpu-wheels, scripts/gpu-check, and the quant part's
torchao handling. CI's scripts/gpu-rehearsal runs the whole path (fresh venv, wheels, `unshare -rn`) end to end;
these test the pieces it cannot make fail on purpose."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import torch

import engine.quantize as qz
from dsvl_tui.bench import gpucheck

ROOT = Path(__file__).resolve().parents[2]


def load_gpu_wheels(folder: Path):
    loader = importlib.machinery.SourceFileLoader("gpu_wheels", str(ROOT / "scripts" / "gpu-wheels"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("gpu_wheels", loader))
    loader.exec_module(module)
    module.FOLDER = folder
    return module


def fake_pip_download(size: int, names=("torchao-0.18.0-cp310-abi3-manylinux_2_28_x86_64.whl",)):
    """Stands in for `pip download` (no registry in a test): writes wheels of ``size`` bytes into its --dest."""
    def run(command, **kwargs):
        assert "--no-deps" in command and "--only-binary=:all:" in command
        dest = Path(command[command.index("--dest") + 1])
        for name in names:
            with open(dest / name, "wb") as f:
                f.truncate(size)
        return subprocess.CompletedProcess(command, 0)
    return run


def test_gpu_wheels_refuses_more_than_48_mib_and_keeps_what_was_there(tmp_path, monkeypatch, capsys):
    gpu_wheels = load_gpu_wheels(tmp_path / ".whl")
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "old-1.0-py3-none-any.whl").write_bytes(b"x")
    monkeypatch.setattr(gpu_wheels.subprocess, "run", fake_pip_download(49 * 2**20))
    assert gpu_wheels.main([]) == 1
    assert "over the 48 MiB limit" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / ".whl").iterdir()] == ["old-1.0-py3-none-any.whl"]


def test_gpu_wheels_replaces_stale_wheels_and_targets_the_box_python(tmp_path, monkeypatch, capsys):
    gpu_wheels = load_gpu_wheels(tmp_path / ".whl")
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "torchao-0.17.0-cp310-abi3-manylinux_2_28_x86_64.whl").write_bytes(b"x")
    seen = []
    download = fake_pip_download(3 * 2**20)
    monkeypatch.setattr(gpu_wheels.subprocess, "run", lambda command, **kw: seen.append(command) or download(command))
    assert gpu_wheels.main([]) == 0
    assert [p.name for p in (tmp_path / ".whl").iterdir()] == ["torchao-0.18.0-cp310-abi3-manylinux_2_28_x86_64.whl"]
    command = seen[0]
    assert command[command.index("--python-version") + 1] == "3.12" and "--platform=manylinux2014_x86_64" in command
    assert gpu_wheels.main(["3.11"]) == 0 and "3.11" in seen[1]
    assert gpu_wheels.main(["twelve"]) == 2


def test_gpu_wheels_refuses_two_versions_of_one_package(tmp_path, monkeypatch, capsys):
    gpu_wheels = load_gpu_wheels(tmp_path / ".whl")
    monkeypatch.setattr(gpu_wheels, "WHEELS", ["torchao==0.18.0", "torchao==0.17.0"])
    names = ("torchao-0.18.0-cp310-abi3-manylinux_2_28_x86_64.whl",
             "torchao-0.17.0-cp310-abi3-manylinux_2_28_x86_64.whl")
    monkeypatch.setattr(gpu_wheels.subprocess, "run", fake_pip_download(10, names))
    assert gpu_wheels.main([]) == 1
    assert "expected one wheel for each" in capsys.readouterr().err


def make_wheel(folder: Path) -> Path:
    """A wheel of one module, ``gpu_check_probe``, whose value says it was imported from the wheel."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "gpu_check_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("gpu_check_probe.py", "FROM = 'the wheel'\n")
        info = "gpu_check_probe-1.0.dist-info"
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: gpu-check-probe\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return wheel


def run_gpu_check(python: str, tmp_path: Path, *extra_env: tuple[str, str]) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHON": python,
           "DSVL_GPU_WHEELS": str(tmp_path / "wheels"), "DSVL_GPU_SITE": str(tmp_path / "site"), **dict(extra_env)}
    return subprocess.run([str(ROOT / "scripts" / "gpu-check"), "--help"], env=env, capture_output=True, text=True,
                          timeout=240)


@pytest.mark.slow
def test_gpu_check_installs_wheels_into_its_own_folder_ignoring_pip_settings(tmp_path):
    make_wheel(tmp_path / "wheels")
    # pip's settings from the environment would break the install if read (a constraints file that is not there,
    # an index folder that is not there): on a box they would name mirrors it cannot reach.
    done = run_gpu_check(sys.executable, tmp_path, ("PIP_CONSTRAINT", str(tmp_path / "missing.txt")),
                         ("PIP_FIND_LINKS", str(tmp_path / "no-such-folder")))
    assert done.returncode == 0, done.stderr
    assert "installed 1 wheel(s)" in done.stderr and "The prepared GPU check" in done.stdout  # gpucheck's --help
    assert (tmp_path / "site" / "gpu_check_probe.py").exists()
    assert (tmp_path / "site" / "gpu_check_probe-1.0.dist-info" / "METADATA").exists()


@pytest.mark.slow
def test_gpu_check_installs_without_pip_by_unzipping(tmp_path):
    venv.EnvBuilder(with_pip=False).create(tmp_path / "bare")
    python = str(tmp_path / "bare" / "bin" / "python")
    assert subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode != 0
    make_wheel(tmp_path / "wheels")
    done = run_gpu_check(python, tmp_path)
    assert done.returncode == 0, done.stderr
    probe = subprocess.run([python, "-c", "import gpu_check_probe; print(gpu_check_probe.FROM)"], capture_output=True,
                           text=True, env={"PYTHONPATH": str(tmp_path / "site")})
    assert probe.stdout.strip() == "the wheel"


@pytest.mark.slow
def test_gpu_check_never_empties_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "precious.txt").write_text("keep")
    done = run_gpu_check(sys.executable, tmp_path)
    assert done.returncode == 2 and "not a folder gpu-check made" in done.stderr
    assert (tmp_path / "site" / "precious.txt").read_text() == "keep"


@pytest.mark.parametrize(("torch_version", "torchao_version", "problem"), [
    ("2.11.0+cu130", "0.18.0", None),  # the GPU box's torch and the torchao scripts/gpu-wheels brings
    ("2.14.1+cu130", "0.18.0", None),
    ("2.10.0", "0.18.0", "torchao 0.18.0 needs torch 2.11 or later; this is torch 2.10.0"),
    ("2.11.0", "0.16.0", "torchao 0.16.0 is built for torch 2.10; this is torch 2.11.0"),
    ("2.10.1", "0.16.0", None),
    ("2.11.0", "0.19.0", None),  # a release the table does not know: the kernel probe decides
])
def test_torchao_mismatch_follows_torchaos_table(torch_version, torchao_version, problem):
    assert qz.torchao_mismatch(torch_version, torchao_version) == problem


def test_torchao_for_another_torch_is_never_imported_and_loads_unquantized(monkeypatch):
    monkeypatch.setitem(qz.KERNELS, "cpu", {"int8": ("torchao",), "int4": ("torchao",)})
    monkeypatch.setattr(qz, "torchao_mismatch", lambda: "torchao 0.16.0 is built for torch 2.10; this is torch 2.14.1")
    monkeypatch.setattr(qz, "quantize_linear", lambda *a: pytest.fail("an unfit torchao must not be imported"))
    plan = qz.plan("int8", torch.device("cpu"), torch.float32)
    assert plan.mode == "none"
    assert plan.note == ("int8 on cpu: no torchao for this torch (torchao 0.16.0 is built for torch 2.10; this is "
                         "torch 2.14.1); loading unquantized")


def test_quant_part_is_skipped_not_failed_without_a_fitting_torchao(monkeypatch, tmp_path):
    monkeypatch.setitem(qz.KERNELS, "cpu", {"int8": ("torchao",), "int4": ("torchao",)})
    monkeypatch.setattr(qz, "torchao_mismatch",
                        lambda: "torchao 0.18.0 needs torch 2.11 or later; this is torch 2.10.0")
    monkeypatch.setattr(gpucheck, "run_big", lambda *a, **k: pytest.fail("nothing to measure without torchao"))
    outcome = gpucheck.run_quant("cpu", True, tmp_path)
    assert outcome["ok"] and outcome["skipped"]
    assert outcome["summary"] == ("skipped: no torchao for this torch (torchao 0.18.0 needs torch 2.11 or later; "
                                  "this is torch 2.10.0)")


def test_the_rehearsal_scripts_are_executable_and_named_by_ci():
    for name in ("gpu-wheels", "gpu-check", "gpu-rehearsal"):
        assert os.access(ROOT / "scripts" / name, os.X_OK), name
    assert "scripts/gpu-rehearsal" in (ROOT / ".ci" / "run").read_text()


def test_results_are_written_after_every_part(monkeypatch, tmp_path):
    """A run stopped at the device's time limit still leaves the parts it finished (the JSON is under $OUT)."""
    out, seen = tmp_path / "gpucheck.json", []
    monkeypatch.setattr(gpucheck, "run_big", lambda *a, **k: {"ok": True, "figures": {"big_decode_tps": 1.0}})
    monkeypatch.setattr(gpucheck, "run_quant", lambda *a, **k: seen.append(json.loads(out.read_text())) or {"ok": True})
    assert gpucheck.main(["--dry-run", "--big", "--quant", "--json", str(out), "--work", str(tmp_path / "work")]) == 0
    assert seen[0]["parts"]["big"]["ok"] and "quant" not in seen[0]["parts"] and not seen[0]["finished"]
    assert json.loads(out.read_text())["finished"]


def test_the_batch_part_prints_aggregate_decode_at_1_4_16_and_32_streams(tmp_path, capsys):
    """The batch part in a dry run: the tiny 1.3B layout on the CPU, real streams through the batching scheduler."""
    out = tmp_path / "gpucheck.json"
    assert gpucheck.main(["--dry-run", "--batch", "--json", str(out), "--work", str(tmp_path / "work")]) == 0
    printed = capsys.readouterr().out
    assert "1.3B bf16 batched decode" in printed
    rows = [line.split("|") for line in printed.splitlines()
            if line.count("|") == 2 and line.split("|")[0].strip().isdigit()]
    assert [int(row[0]) for row in rows] == [1, 4, 16, 32]
    assert "(target >= 8x)" in rows[2][2]
    result = json.loads(out.read_text())
    batch = result["parts"]["batch"]
    assert batch["ok"] and [row["streams"] for row in batch["rows"]] == [1, 4, 16, 32]
    assert all(row["aggregate_tok_s"] > 0 for row in batch["rows"]) and batch["rows"][0]["over_1"] == 1.0
    assert [t for t in result["targets"] if t["target"] == "batch_16_over_1"][0]["verdict"] == "-"  # not judged dry
