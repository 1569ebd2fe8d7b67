"""Limits on the pictures the app decodes, in a module that imports nothing.

The engine (``engine.images``) and the front ends' previews check the same
numbers; previews must not import ``engine.images``, which imports torch.
"""

from __future__ import annotations

# Refuse pictures over this many pixels before decoding them: a small file can
# claim a huge size (a "decompression bomb") and exhaust memory. We check it
# ourselves instead of changing PIL's process-wide Image.MAX_IMAGE_PIXELS.
MAX_IMAGE_PIXELS = 64_000_000


def too_many_pixels(width: int, height: int) -> bool:
    """True for a picture the engine would refuse for its size (or an empty one)."""
    return width <= 0 or height <= 0 or width * height > MAX_IMAGE_PIXELS


__all__ = ["MAX_IMAGE_PIXELS", "too_many_pixels"]
