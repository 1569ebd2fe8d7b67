"""The image caches: preprocessed pictures by file or bytes, and the vision tower's features by content.

Every turn prepares the whole history (and front ends prepare it again to
measure the context), so an unchanged file, or the same bytes sent again by
a stateless client, is decoded and resized once (``picture``). Encoded
images are kept by content hash, so a picture is run through the vision
tower once however many turns it stays in the conversation (``features``).
Both are bounded least-recently-used stores of ``max_entries`` images.
"""

from __future__ import annotations

import os
import threading

import torch

from ..images import ImagePreprocessor, image_key, load_image
from ..types import EncodedImage, ImageSource, Prepared
from .reuse import LruStore


class ImageCache:
    """Pictures (callers' threads, under a lock) and features (the generation thread) of one engine."""

    def __init__(self, preprocess: ImagePreprocessor, max_entries: int, *, enabled: bool = True):
        self.preprocess = preprocess
        self.enabled = enabled  # False: every image decoded and encoded every time (upstream's way)
        self.features = LruStore(max_entries)  # content key -> aligned features [T_img, D]
        self.pictures = LruStore(max_entries)  # (path, mtime, size) or file bytes' digest -> (key, pixels)
        self._pictures_lock = threading.Lock()  # prepare() runs on callers' threads
        self.vision_calls = 0  # images run through the vision tower (for tests and benchmarks)

    def picture(self, source: ImageSource) -> tuple[str, torch.Tensor]:
        """Content key and preprocessed pixels of one image."""
        stamp: tuple | None = None
        if self.enabled and isinstance(source, EncodedImage):
            stamp = ("bytes", source.digest)
        elif self.enabled and isinstance(source, (str, os.PathLike)):
            try:
                stat = os.stat(source)
                stamp = (os.path.abspath(source), stat.st_mtime_ns, stat.st_size)
            except OSError:
                pass  # load_image gives the clear error
        if stamp is not None:
            with self._pictures_lock:
                hit = self.pictures.get(stamp)
            if hit is not None:
                return hit
        image = load_image(source)
        picture = (image_key(image), self.preprocess(image))
        if stamp is not None:
            with self._pictures_lock:
                self.pictures.put(stamp, picture)
        return picture

    def encoded(self, prepared: Prepared, index: int) -> bool:
        """Whether the features of ``prepared``'s image ``index`` are cached (leaves the eviction order alone)."""
        return self.enabled and self.features.peek(prepared.image_keys[index]) is not None

    def features_of(self, model, prepared: Prepared, needed: list[int]) -> dict[int, torch.Tensor]:
        """Aligned features [T_img, D] of the images at ``needed`` indexes, from the cache where possible."""
        out: dict[int, torch.Tensor] = {}
        missing = []
        for index in needed:
            cached = self.features.get(prepared.image_keys[index]) if self.enabled else None
            if cached is None:
                missing.append(index)
            else:
                out[index] = cached
        if missing:
            # Text-only prompts never get here: upstream encodes a blank image for them.
            encoded = model.encode_images(torch.stack([prepared.images[i] for i in missing]))
            self.vision_calls += len(missing)
            for index, features in zip(missing, encoded, strict=True):
                if self.enabled:
                    self.features.put(prepared.image_keys[index], features)
                out[index] = features
        return out
