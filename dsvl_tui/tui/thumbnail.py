"""Decode a picture for a preview: within the engine's limit, and no larger than it is shown.

A preview is a few dozen cells, yet decoding a file in full and converting it
step by step (orientation, transparency, RGB) kept several full-size copies
alive: a 12000x12000 PNG of a few hundred KB took 1.6 GB. ``reduced`` instead

- refuses a picture over ``engine.image_limits.MAX_IMAGE_PIXELS`` from its
  header, before anything is decoded (``PictureTooLarge``), as the engine does;
- lets JPEG decode at 1/2, 1/4 or 1/8 scale (``Image.draft``);
- shrinks to about twice the size shown straight after decoding, with no
  full-size copy (``Image.reduce`` for the modes it averages in place, a
  nearest-pixel resize for the rest), and only then turns and converts it;
- decodes at most ``MAX_PARALLEL_DECODES`` pictures at once, however many
  previews a loaded conversation mounts.

A PNG, GIF, WebP or TIFF still has to be decoded at full size once (Pillow
cannot decode them smaller), so the peak is one decoded copy per decode slot.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from engine import image_limits

MAX_PARALLEL_DECODES = 2
_DECODE_SLOTS = threading.BoundedSemaphore(MAX_PARALLEL_DECODES)

# Modes ``Image.reduce`` averages in place; others (palette, bilevel, 16-bit, and those with an
# alpha channel, which reduce would first copy premultiplied at full size) are sampled instead.
_AVERAGED = frozenset({"L", "RGB", "CMYK", "YCbCr", "I", "F"})
# EXIF orientation -> the turn that makes the picture upright (Pillow's ImageOps.exif_transpose table).
_TURNS = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
          7: "TRANSVERSE", 8: "ROTATE_90"}


class PictureTooLarge(ValueError):
    """The picture has more pixels than the engine accepts (or none); it is not decoded."""


def check_size(width: int, height: int) -> None:
    """Raise ``PictureTooLarge`` for a picture the engine would refuse for its size."""
    if image_limits.too_many_pixels(width, height):
        raise PictureTooLarge(f"{width}x{height} pixels, over the limit of {image_limits.MAX_IMAGE_PIXELS:,}")


def reduced(image: Any, box: tuple[int, int]) -> Any:
    """A new, upright picture made from the opened (not yet decoded) PIL ``image``.

    It is at least twice ``box`` (width, height in pixels) where the picture
    is that large, fitted the way the preview fits it, and keeps ``image``'s
    mode and transparency; ``image`` itself is decoded once and left open.
    """
    from PIL import Image

    check_size(*image.size)
    with _DECODE_SLOTS:
        width, height = image.size
        turn = _turn(image)
        if turn in ("TRANSPOSE", "ROTATE_270", "TRANSVERSE", "ROTATE_90"):
            box = (box[1], box[0])  # fitted after turning: the shown width is the stored height
        fit = min(box[0] / width, box[1] / height, 1.0)
        image.draft(image.mode, (math.ceil(width * fit * 2), math.ceil(height * fit * 2)))
        image.load()  # JPEG: at the drafted scale; the size may now be smaller
        width, height = image.size
        fit = min(box[0] / width, box[1] / height, 1.0)
        if image.mode in _AVERAGED:
            factor = max(1, int(1 / (2 * fit)))
            small = image.reduce(factor) if factor > 1 else image.copy()
        else:
            size = (max(1, math.ceil(width * fit * 4)), max(1, math.ceil(height * fit * 4)))
            shrinks = size[0] < width and size[1] < height
            small = image.resize(size, Image.Resampling.NEAREST) if shrinks else image.copy()
    if turn is not None:
        small = small.transpose(getattr(Image.Transpose, turn))
    # The turn is done: no orientation tag may be applied a second time later.
    small.info = {key: image.info[key] for key in ("transparency",) if key in image.info}
    return small


def _turn(image: Any) -> str | None:
    try:
        orientation = image.getexif().get(0x0112)  # reads EXIF (and XMP) metadata, not pixels
    except Exception:  # noqa: BLE001 - orientation is optional metadata; a broken block means none
        return None
    return _TURNS.get(orientation) if isinstance(orientation, int) else None
