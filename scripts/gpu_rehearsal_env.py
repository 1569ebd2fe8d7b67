"""Helpers of scripts/gpu-rehearsal: lend this machine's CUDA libraries to a fresh venv, and prove the venv box-like.

    python scripts/gpu_rehearsal_env.py link VENV_PYTHON     (run by the system Python that holds torch)
    python scripts/gpu_rehearsal_env.py check                (run by the venv's Python)

The venv installs the box's torch 2.11.0 and torchvision 0.26.0 (PyPI's CUDA 13 builds; scripts/gpu-rehearsal.txt).
Why not the small torch 2.13.0+cpu wheel on this machine's disk: PyPI's torchvision wheels (which timm, and so the
engine, imports) are built against the CUDA torch, and on the CPU build their operators do not load (``operator
torchvision::nms does not exist``). The CUDA build's own requirements (the NVIDIA libraries, about 3 GB, and
triton) are not installed again: those of this machine's torch 2.14.1 (same CUDA 13 line, newer patch releases)
are linked. The CPU dry run loads those libraries as torch starts and never calls them.

What is linked: the distributions this machine's torch and torchvision require, recursively, but for those the
venv installs itself (torch, torchvision, and whatever the lock names); each one's top-level entries and
dist-info, through a folder named by a .pth file: nothing else of the system's site-packages is visible. pip must
never uninstall anything there (it would delete the system's files through the links), so the venv's packages
are installed with --no-deps from a lock that names none of them.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOTS = ("torch", "torchvision")  # whose requirements are linked; the venv installs the box's releases of these
# What `pip check` may report: the box's torch pins its CUDA libraries and triton to the releases it was built
# with, and the linked ones are this machine's torch 2.14.1's.
LINKED_MISMATCH = re.compile(r"^torch(vision)? \S+ has requirement (nvidia-|cuda-|triton)")


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
    missing = [r for r in ROOTS if r not in locked]
    if missing:
        print(f"gpu-rehearsal: scripts/gpu-rehearsal.txt must name {missing}: they are never linked", file=sys.stderr)
        return 2
    dists = {name: dist for name, dist in closure(ROOTS, stop=locked - set(ROOTS)).items() if name not in ROOTS}
    if not dists:
        print(f"gpu-rehearsal: torch is not installed in {sys.executable}; install the project first (.ci/run does)",
              file=sys.stderr)
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
    print(f"gpu-rehearsal: linked {len(dists)} distributions that this machine's torch {md.version('torch')} and "
          f"torchvision require ({', '.join(sorted(dists))})")
    return 0


def check() -> int:
    """The venv is whole (`pip check`, but for the linked CUDA libraries' releases) and every distribution this
    Python sees is one the box holds (scripts/gpu-box-packages.txt)."""
    done = subprocess.run([sys.executable, "-m", "pip", "check", "--disable-pip-version-check"], capture_output=True,
                          text=True)
    broken = [line for line in done.stdout.splitlines() if line.strip() and not LINKED_MISMATCH.match(line)
              and line != "No broken requirements found."]
    if broken:
        print("gpu-rehearsal: the venv is not whole:\n  " + "\n  ".join(broken), file=sys.stderr)
        return 1
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
    if command == "check":
        raise SystemExit(check())
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    raise SystemExit(2)
