"""Pictures as ``data:`` URLs for an OpenAI-compatible server, read like ``/image`` reads them.

Only regular files are read, up to ``MAX_IMAGE_BYTES``, and a picture over the
engine's pixel limit is refused before it is sent (``ImageError``, one line).
A file goes as its own bytes in its own format; an in-memory picture as PNG.
"""

from __future__ import annotations

import base64
import io
import os
import threading
import weakref
from collections import OrderedDict
from typing import Any

from engine.errors import ImageError
from engine.files import FileTooLargeError, NotRegularFileError, read_regular
from engine.image_limits import FORMAT_NAMES, MAX_IMAGE_PIXELS, open_picture, too_many_pixels
from engine.types import EncodedImage, ImageSource

__all__ = ["MAX_IMAGE_BYTES", "DataUrlCache", "image_data_url"]

MAX_IMAGE_BYTES = 20 * 2**20  # one image file sent; as base64 it stays under a server's 32 MiB body limit
_FORMATS = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
            "BMP": "image/bmp", "TIFF": "image/tiff"}  # every one of image_limits.ALLOWED_FORMATS


class DataUrlCache:
    """The ``data:`` URLs of the pictures in a conversation, made once each.

    The API is stateless, so every turn sends the whole conversation again with
    all its pictures; without this each turn would read (or PNG-encode) and
    base64 every picture anew. Bounded by entries and by bytes; a file is known
    by its path, modification time and size, as the engine knows it.
    """

    def __init__(self, *, entries: int = 32, max_bytes: int = 256 * 2**20) -> None:
        self._urls: OrderedDict[tuple, tuple[Any, str]] = OrderedDict()
        self._entries, self._max_bytes, self._bytes = entries, max_bytes, 0
        self._lock = threading.Lock()

    def url(self, source: ImageSource) -> str:
        key, keep = _source_key(source)
        if key is not None:
            with self._lock:
                hit = self._urls.get(key)
                if hit is not None and (hit[0] is None or hit[0]() is source):
                    self._urls.move_to_end(key)
                    return hit[1]
        url = image_data_url(source)
        if key is not None and len(url) <= self._max_bytes:
            with self._lock:
                old = self._urls.pop(key, None)
                self._bytes -= len(old[1]) if old else 0
                self._urls[key] = (keep, url)
                self._bytes += len(url)
                while len(self._urls) > self._entries or self._bytes > self._max_bytes:
                    self._bytes -= len(self._urls.popitem(last=False)[1][1])
        return url


def _source_key(source: ImageSource) -> tuple[tuple | None, Any]:
    """A cache key for ``source`` and, for an in-memory picture, a weak reference that proves it is still the
    same one."""
    from PIL import Image

    if isinstance(source, EncodedImage):
        return ("bytes", source.digest), None
    if isinstance(source, Image.Image):  # known by identity: a PIL image can change in place, but ours do not
        return ("pil", id(source)), weakref.ref(source)
    try:
        path = os.path.abspath(os.path.expanduser(os.fsdecode(os.fspath(source))))
        stat = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None, None  # image_data_url gives the clear error
    return ("file", path, stat.st_mtime_ns, stat.st_size), None


def image_data_url(source: ImageSource) -> str:
    """``source`` (a path, a PIL image or a file's bytes) as a ``data:`` URL; refused like ``/image`` refuses it
    (``ImageError``)."""
    from PIL import Image

    if isinstance(source, EncodedImage):
        if len(source.data) > MAX_IMAGE_BYTES:
            raise ImageError(f"image is larger than {MAX_IMAGE_BYTES >> 20} MB: {source.name} — scale it down")
        return _file_data_url(source.data, source.name)
    if isinstance(source, Image.Image):
        if too_many_pixels(*source.size):
            raise ImageError(f"image is too large: {source.size[0]}x{source.size[1]} pixels is more than "
                             f"{MAX_IMAGE_PIXELS:,} — scale it down and attach it again")
        buffer = io.BytesIO()
        source.convert("RGBA" if "A" in source.getbands() else "RGB").save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    path = os.path.expanduser(os.fsdecode(os.fspath(source)))
    try:
        data = read_regular(path, MAX_IMAGE_BYTES)
    except FileTooLargeError:
        raise ImageError(f"image file is larger than {MAX_IMAGE_BYTES >> 20} MB: {path} — scale it down") from None
    except NotRegularFileError as exc:
        raise ImageError(f"image path is {exc.kind}, not a regular file: {path} — choose an image file") from None
    except FileNotFoundError:
        raise ImageError(f"image not found: {path} — check the path") from None
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror or exc}") from None
    return _file_data_url(data, path)


def _file_data_url(data: bytes, path: str) -> str:
    """An image file's bytes as a ``data:`` URL of its own format, after reading its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open_picture(io.BytesIO(data)) as image:  # the header only (an ICO would decode here: refused)
            size, kind = image.size, image.format or ""
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image is too large: {path} ({exc}) — scale it down and attach it again") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageError(f"not an image file: {path} — choose a {FORMAT_NAMES} file") from None
    if too_many_pixels(*size):
        raise ImageError(f"image is too large: {path} ({size[0]}x{size[1]} pixels is more than "
                         f"{MAX_IMAGE_PIXELS:,}) — scale it down and attach it again")
    mime = _FORMATS.get(kind, "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
