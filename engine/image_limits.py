"""Limits on the pictures the app decodes, and the one way to open one, in a module that imports nothing.

The engine (``engine.images``) and the front ends' previews check the same
numbers and open pictures the same way (``open_picture``); previews must not
import ``engine.images``, which imports torch. Pillow itself is imported only
when a picture is opened.
"""

from __future__ import annotations

import re
import warnings
from typing import IO, Any

# Refuse pictures over this many pixels before decoding them: a small file can
# claim a huge size (a "decompression bomb") and exhaust memory.
MAX_IMAGE_PIXELS = 64_000_000

# The formats a picture is opened in; any other is refused before Pillow reads past its
# header. Each of these reports its real size from the header and decodes nothing until
# asked, so the size check comes before any pixel. Left out on purpose: ICO and CUR decode
# their largest frame inside Image.open, whatever size their directory claims (a 657 KB
# .ico holding a 13000x13000 PNG cost 661 MB before any check), ICNS, DDS and friends
# hold frames the header does not describe, EPS runs Ghostscript. MPO (a camera's JPEG
# with extra frames) is opened as JPEG, at its first frame.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
FORMAT_NAMES = "PNG, JPEG, GIF, WebP, BMP or TIFF"


def too_many_pixels(width: int, height: int) -> bool:
    """True for a picture the engine would refuse for its size (or an empty one)."""
    return width <= 0 or height <= 0 or width * height > MAX_IMAGE_PIXELS


def guard_pillow() -> Any:
    """``PIL.Image``, with Pillow's own limit set to ours as a second guard and its warnings kept off the screen.

    Pillow warns (``DecompressionBombWarning``) for a picture over its
    ``MAX_IMAGE_PIXELS`` and raises only over twice that: the warning is made
    an error, so Pillow refuses exactly what the engine refuses, wherever it
    checks (each ICO frame, each GIF frame as it is reached), even on a path
    that forgot ``too_many_pixels``. Its other warnings (corrupt EXIF, odd
    sizes) are ignored: a front end shows one clear line, never a warning
    printed over the screen. Process-wide filters, set once, not
    ``warnings.catch_warnings`` (which is not thread-safe: previews, the
    server and the engine open pictures in several threads at once).
    Idempotent and cheap: called on every open.
    """
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # never looser than ours (a stricter one set by the host stays)
    # First the error, then the ignore: the first filter that matches wins, and both match the bomb warning.
    pillow = r"PIL(\.|$)"
    wanted = [("error", Image.DecompressionBombWarning, None), ("ignore", Warning, pillow)]
    if [(f[0], f[2], getattr(f[3], "pattern", None)) for f in warnings.filters[:2]] != wanted:
        # Each goes to the front, replacing its old copy: the ignore first, so the error ends up before it.
        warnings.filterwarnings("ignore", category=Warning, module=pillow)
        warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    return Image


def open_picture(fp: str | IO[bytes]) -> Any:
    """``Image.open(fp)`` in ``ALLOWED_FORMATS`` only: the header is read, no pixel is decoded.

    Raises what ``Image.open`` raises (``PIL.UnidentifiedImageError`` for a
    format not allowed, or not a picture), and ``PIL.Image.DecompressionBombError``
    for a picture over ``MAX_IMAGE_PIXELS``, whichever check saw it first.
    """
    image = guard_pillow()
    try:
        picture = image.open(fp, formats=ALLOWED_FORMATS)
    except (image.DecompressionBombWarning, image.DecompressionBombError) as exc:  # the warning: an error here
        found = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow's "Image size (N pixels) exceeds limit of ..."
        size = f"{int(found[1]):,} pixels" if found else "too many pixels"
        raise image.DecompressionBombError(f"{size}, over the limit of {image.MAX_IMAGE_PIXELS:,}") from None
    width, height = picture.size
    if width * height > MAX_IMAGE_PIXELS:  # also where the filters were reset (a test's catch_warnings)
        picture.close()
        raise image.DecompressionBombError(f"{width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS:,}")
    return picture


__all__ = ["ALLOWED_FORMATS", "FORMAT_NAMES", "MAX_IMAGE_PIXELS", "guard_pillow", "open_picture", "too_many_pixels"]
