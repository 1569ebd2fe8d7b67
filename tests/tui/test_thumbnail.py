"""Previews decode within the engine's pixel limit and no larger than they are shown."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image
from tui_support import Host, run_async, wait_for

from dsvl_tui.core.conversation import Attachment
from dsvl_tui.tui import thumbnail
from dsvl_tui.tui.widgets import ImagePreview
from dsvl_tui.tui.widgets._image_preview import half_block_rows
from engine.image_limits import MAX_IMAGE_PIXELS

ROOT = Path(__file__).resolve().parents[2]


def solid_png(path: Path, width: int, height: int, *, rows: int | None = None) -> Path:
    """A solid RGBA PNG written a row at a time (the picture is never whole in memory).

    ``rows`` writes only that many rows of pixel data: enough for a header that
    claims the full size, which is all that is read before a size check.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(1)
    row = b"\x00" + b"\x78\x40\x20\xff" * width
    data = b"".join(packer.compress(row) for _ in range(height if rows is None else rows)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.mark.slow
def test_limit_is_the_engines_and_importing_it_is_light():
    code = "import sys, engine.image_limits, dsvl_tui.tui.thumbnail; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=ROOT).stdout.strip() == "False"
    from engine import images

    assert images.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS


def test_a_picture_over_the_limit_is_refused_from_its_header(tmp_path):
    # 81 Mpx: over our limit, under Pillow's own bomb check (89 Mpx), so only our check stops it.
    path = solid_png(tmp_path / "big.png", 9000, 9000, rows=2)
    with Image.open(path) as opened, pytest.raises(thumbnail.PictureTooLarge, match="9000x9000"):
        thumbnail.reduced(opened, (24, 16))


@run_async
async def test_an_oversized_preview_says_so_and_draws_nothing(tmp_path):
    preview = ImagePreview(Attachment(path=str(solid_png(tmp_path / "huge.png", 9000, 9000, rows=2)), name="huge.png"))
    async with Host(preview).run_test() as pilot:
        await wait_for(pilot, lambda: preview.has_class("-failed"))
        assert preview._caption == "[too large] huge.png" and not preview.has_cells


def test_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (2400, 1600), (10, 200, 30)).save(path)
    with Image.open(path) as opened:
        small = thumbnail.reduced(opened, (24, 16))
        assert opened.size == (300, 200)  # decoded at 1/8: the JPEG was never decoded whole
    assert 48 <= small.width <= 150 and small.getpixel((0, 0))[1] > 150


def test_the_reduced_picture_is_upright_and_keeps_transparency(tmp_path):
    picture = Image.new("RGBA", (400, 200), (255, 0, 0, 255))
    picture.paste((0, 0, 255, 255), (200, 0, 400, 200))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: shown rotated 90 degrees clockwise, left side on top
    picture.save(tmp_path / "turned.png", exif=exif)
    with Image.open(tmp_path / "turned.png") as opened:
        small = thumbnail.reduced(opened, (24, 16))
    assert small.height > small.width and small.mode == "RGBA"
    rows = half_block_rows(small, 24, 8)  # no second turn from a leftover orientation tag
    assert rows[0][0][0] == (255, 0, 0) and rows[-1][0][1] == (0, 0, 255)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak from Linux's /proc")
def test_preview_peak_memory_is_one_decoded_copy(tmp_path):
    """A 4000x4000 RGBA PNG decodes to 64 MB; the preview's peak stays near that (before: ~250 MB)."""
    path = solid_png(tmp_path / "large.png", 4000, 4000)
    script = f"""
import asyncio, json, sys
sys.path.insert(0, "tests")
from tui_support import Host, wait_for
from dsvl_tui.core.conversation import Attachment
from dsvl_tui.tui.widgets import ImagePreview

def peak_mb():  # this process's own high-water mark (ru_maxrss would start at the parent's size)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024

async def main():
    preview = ImagePreview(Attachment(path={str(path)!r}, name="large.png"))
    before = peak_mb()
    async with Host(preview).run_test() as pilot:
        await wait_for(pilot, lambda: preview.has_cells, timeout=60)
        return peak_mb() - before

print(json.dumps(asyncio.run(main())))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    peak_mb = json.loads(result.stdout)
    decoded_mb = 4000 * 4000 * 4 / 2**20
    assert peak_mb < 1.5 * decoded_mb, f"peak {peak_mb:.0f} MB for a {decoded_mb:.0f} MB picture"
