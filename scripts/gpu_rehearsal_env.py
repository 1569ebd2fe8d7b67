"""Helpers of scripts/gpu-rehearsal: lend this machine's torch to a fresh venv, and prove the venv box-like.

    python scripts/gpu_rehearsal_env.py link VENV_PYTHON     (run by the system Python that holds torch)
    python scripts/gpu_rehearsal_env.py verify               (run by the venv's Python)

Why torch is linked rather than installed: the only torch wheel on this machine's disk for Python 3.11
that is small (2.13.0+cpu) cannot be used, because PyPI's torchvision wheels (which timm, and so the
engine, imports) are built against the CUDA torch and their operators do not load on the CPU build
(``operator torchvision::nms does not exist``). The CUDA build CI installs (torch 2.14.1+cu130 with
torchvision 0.29.1) takes 3.5 minutes and 4 GB to install again; linked, it takes a second. The box's
own torch is 2.11.0+cu130: the same CUDA 13 line, two releases older.

Only torch, torchvision and the distributions they require (recursively) are linked, each one's
top-level entries and dist-info, through a folder named by a .pth file: nothing else of the system's
site-packages is visible. pip must never uninstall anything there (it would delete the system's files
through the links), so the venv's own packages are installed with --no-deps from a lock that names
none of them: what the lock names (numpy, Pillow) is not linked.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LINKED_ROOTS = ("torch", "torchvision")


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: tuple[str, ...], stop: set[str]) -> dict[str, md.Distribution]:
    """The installed distributions ``roots`` require, recursively (environment markers honoured, extras not),
    but for those named in ``stop`` (the venv installs its own)."""
    from packaging.requirements import Requirement  # pip's and transformers' dependency; on the box too

    found: dict[str, md.Distribution] = {}
    todo = list(roots)
    while todo:
        name = normal(todo.pop())
        if name in found or name in stop:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional platform dependency that is not installed here
        found[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def lock_names() -> set[str]:
    lines = (HERE / "gpu-rehearsal.txt").read_text().splitlines()
    return {normal(re.split(r"[=<>!~ ]", line.strip(), maxsplit=1)[0]) for line in lines
            if line.strip() and not line.startswith("#")}


def link(venv_python: str) -> int:
    site = Path(subprocess.run([venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    locked = lock_names()
    dists = closure(LINKED_ROOTS, stop=locked)
    missing = [r for r in LINKED_ROOTS if r not in dists]
    if missing:
        print(f"gpu-rehearsal: {', '.join(missing)} not installed in {sys.executable}; install the project first "
              "(.ci/run does)", file=sys.stderr)
        return 2
    if set(LINKED_ROOTS) & locked:
        print("gpu-rehearsal: scripts/gpu-rehearsal.txt names torch or torchvision; pip would uninstall them "
              "through the links", file=sys.stderr)
        return 2
    own = {normal(d.metadata["Name"]) for d in md.distributions(path=[str(site)])}  # pip, setuptools of the venv
    folder = site.parent / "system-torch"
    folder.mkdir(exist_ok=True)
    for name, dist in sorted(dists.items()):
        if name in own:
            continue
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")} - {"__pycache__"}
        base = Path(str(dist.locate_file("")))
        for top in sorted(tops):
            target = folder / top
            if not target.exists():
                target.symlink_to(base / top)
    (site / "system-torch.pth").write_text(f"{folder}\n")
    versions = ", ".join(f"{n} {d.version}" for n, d in sorted(dists.items()) if n in LINKED_ROOTS)
    print(f"gpu-rehearsal: linked {versions} and {len(dists) - len(LINKED_ROOTS)} distributions they require")
    return 0


def verify() -> int:
    """Every distribution this Python sees is one the box holds (scripts/gpu-box-packages.txt)."""
    box = {normal(line) for line in (HERE / "gpu-box-packages.txt").read_text().splitlines()
           if line.strip() and not line.startswith("#")}
    seen = {normal(d.metadata["Name"]) for d in md.distributions()}
    extra = sorted(seen - box)
    if extra:
        print(f"gpu-rehearsal: the venv holds distributions the GPU box lacks: {', '.join(extra)}", file=sys.stderr)
        return 1
    print(f"gpu-rehearsal: the venv's {len(seen)} distributions are all on the GPU box's list")
    return 0


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "link" and len(sys.argv) == 3:
        raise SystemExit(link(sys.argv[2]))
    if command == "verify":
        raise SystemExit(verify())
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    raise SystemExit(2)
