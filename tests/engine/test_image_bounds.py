"""Pictures are bounded before any pixel is decoded, on every way in; Pillow's warnings never print.

A 300 KB .ico can hold a 9000x9000 PNG: Pillow decodes an ICO's frame inside
``Image.open`` (324 MB here) before anyone can look at its size, so only
formats whose header gives the real size are opened at all
(``engine.image_limits.ALLOWED_FORMATS``), and Pillow's own limit is set to
the engine's as a second guard.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

from engine import image_limits
from engine.errors import ImageError
from engine.images import load_image
from engine.types import EncodedImage

ROOT = Path(__file__).resolve().parents[2]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def blank_png(width: int, height: int, *, rows: int | None = None) -> bytes:
    """A blank RGBA PNG, compressed a row at a time (never whole in memory); ``rows``: only that many rows."""
    packer = zlib.compressobj(9)
    row = bytes(1 + 4 * width)
    data = b"".join(packer.compress(row) for _ in range(height if rows is None else rows)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def ico_holding(png: bytes) -> bytes:
    """An .ico whose one entry claims 256x256 (a 0 byte) and holds ``png``, whatever its size."""
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22) + png


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.ico"
    path.write_bytes(ico_holding(blank_png(9000, 9000)))  # ~300 KB on disk, 324 MB decoded
    return path


# Each way a picture comes in, run in a fresh process: its peak memory, and what it printed.
WAYS = {
    "engine, a file": "load_image(path)",
    "engine, bytes": "load_image(EncodedImage(data, 'x.ico'))",
    "a transcript's embedded picture": "load_image(Attachment(data=data, name='x.ico').engine_source())",
    "the remote client's data URL": "image_data_url(path)",
    "serve's request": "decode_image('data:image/png;base64,' + base64.b64encode(data).decode(), 1)",
    "the preview": "preview()",
}
SCRIPT = """
import base64, json, sys
from dsvl_tui.core.conversation import Attachment
from dsvl_tui.backends.image_urls import image_data_url
from dsvl_tui.serve.requests import decode_image
from dsvl_tui.tui import thumbnail
from dsvl_tui.tui.widgets._image_preview import _open
from engine.images import load_image
from engine.types import EncodedImage

path = sys.argv[1]
with open(path, "rb") as file:
    data = file.read()

def preview():
    with _open(Attachment(path=path)) as opened:
        thumbnail.reduced(opened, (24, 16))

def peak_mb():  # this process's own high-water mark
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024

before = peak_mb()
try:
    WAY
    refused = None
except Exception as exc:
    refused = f"{type(exc).__name__}: {exc}"
print(json.dumps([peak_mb() - before, refused]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak from Linux's /proc")
@pytest.mark.parametrize("way", list(WAYS))
def test_an_ico_bomb_is_refused_before_any_pixel_is_decoded(bomb, way):
    result = subprocess.run([sys.executable, "-c", SCRIPT.replace("WAY", WAYS[way]), str(bomb)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    grown, refused = json.loads(result.stdout)
    assert refused is not None and "\n" not in refused
    assert grown < 60, f"{way}: {grown:.0f} MB for a picture that decodes to 324 MB"
    assert result.stderr == ""  # before: Pillow's "Image was not the expected size" over the screen


def test_formats_that_decode_on_open_are_refused_in_one_line(tmp_path):
    small = tmp_path / "icon.ico"
    Image.new("RGBA", (16, 16), (255, 0, 0, 255)).save(small)
    for source, name in [(small, "icon.ico"), (EncodedImage(small.read_bytes(), "image 2"), "image 2")]:
        with pytest.raises(ImageError, match="not a format this app reads") as err:
            load_image(source)
        assert "\n" not in str(err.value) and name in str(err.value) and "PNG, JPEG" in str(err.value)


def test_every_allowed_format_still_loads(tmp_path):
    for fmt in image_limits.ALLOWED_FORMATS:
        buffer = io.BytesIO()
        Image.new("RGB", (6, 4), (0, 0, 255)).save(buffer, format=fmt)
        image = load_image(EncodedImage(buffer.getvalue(), f"x.{fmt}"))
        assert image.size == (6, 4)


def test_pillows_own_limit_is_the_engines_and_an_error():
    # A header over the limit, opened with Pillow directly: its own check now refuses it too.
    over = blank_png(8001, 8000, rows=1)
    image_limits.guard_pillow()
    assert Image.MAX_IMAGE_PIXELS == image_limits.MAX_IMAGE_PIXELS
    with pytest.raises(Image.DecompressionBombWarning):
        Image.open(io.BytesIO(over))
    with pytest.raises(Image.DecompressionBombError, match="64,008,000 pixels, over the limit of 64,000,000"):
        image_limits.open_picture(io.BytesIO(over))
    with pytest.raises(ImageError, match="too large") as err:
        load_image(EncodedImage(over, "big.png"))
    assert "\n" not in str(err.value)
    assert image_limits.open_picture(io.BytesIO(blank_png(8000, 8000, rows=1))).size == (8000, 8000)


def test_a_stricter_limit_set_by_the_host_is_kept(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    image_limits.guard_pillow()
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_the_guard_survives_other_filters_and_is_set_once():
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # what `python -W always` or a test runner puts first
        image_limits.guard_pillow()
        count = len(warnings.filters)
        image_limits.guard_pillow()
        assert len(warnings.filters) == count
        with pytest.raises(Image.DecompressionBombWarning):
            Image.open(io.BytesIO(blank_png(8001, 8000, rows=1)))


def corrupt_exif_png(path: Path) -> Path:
    """A PNG whose EXIF block points past its end: Pillow warns twice while reading the orientation."""
    exif = (b"MM\x00\x2a\x00\x00\x00\x08\x00\x02" + struct.pack(">HHII", 0x0112, 3, 1, 6 << 16)
            + struct.pack(">HHII", 0x010E, 2, 5000, 100))
    Image.new("RGB", (4, 4), (255, 0, 0)).save(path, exif=exif)
    return path


@pytest.mark.slow
def test_pillows_warnings_never_reach_the_terminal(tmp_path):
    path = corrupt_exif_png(tmp_path / "odd.png")
    script = SCRIPT.replace("WAY", "load_image(path); preview(); image_data_url(path)")
    result = subprocess.run([sys.executable, "-W", "default", "-c", script, str(path)], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0 and json.loads(result.stdout)[1] is None, result.stdout + result.stderr
    assert result.stderr == ""
