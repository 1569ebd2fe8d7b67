"""Pictures go to a server as data: URLs made once per picture, however many turns resend them."""

from __future__ import annotations

import base64
import gc
import os
from pathlib import Path

import pytest
from PIL import Image

import dsvl_tui.backends.image_urls as image_urls
from dsvl_tui.backends.image_urls import DataUrlCache, image_data_url
from engine.errors import ImageError
from engine.types import EncodedImage


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = image_urls.read_regular
    monkeypatch.setattr(image_urls, "read_regular", lambda path, limit: seen.append(path) or real(path, limit))
    return seen


def test_a_file_is_read_once_until_it_changes(tmp_path: Path, reads: list[str]) -> None:
    path = tmp_path / "p.png"
    Image.new("RGB", (8, 6), "red").save(path)
    cache = DataUrlCache()
    first = cache.url(path)
    assert cache.url(str(path)) == first and len(reads) == 1
    Image.new("RGB", (8, 6), "blue").save(path)
    os.utime(path, ns=(1, 1))  # a new modification time, whatever the clock's resolution
    changed = cache.url(path)
    assert len(reads) == 2 and changed != first
    assert base64.b64decode(changed.split(",", 1)[1]) == path.read_bytes()


def test_an_in_memory_picture_is_encoded_once_and_never_confused_with_a_new_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[int] = []
    real = image_urls.image_data_url
    monkeypatch.setattr(image_urls, "image_data_url", lambda source: encoded.append(1) or real(source))
    cache = DataUrlCache()
    picture = Image.new("RGB", (4, 4), "green")
    url = cache.url(picture)
    assert cache.url(picture) == url and len(encoded) == 1
    del picture
    gc.collect()
    other = Image.new("RGB", (4, 4), "white")  # may get the dead picture's id(): the weak reference tells them apart
    assert cache.url(other) == real(other) and len(encoded) == 2


def test_the_cache_is_bounded_by_entries_and_bytes(tmp_path: Path, reads: list[str]) -> None:
    paths = []
    for number in range(3):
        path = tmp_path / f"{number}.png"
        Image.new("RGB", (4, 4), (number, 0, 0)).save(path)
        paths.append(path)
    cache = DataUrlCache(entries=2)
    for path in paths:
        cache.url(path)
    cache.url(paths[0])  # evicted by the third: read again
    assert len(reads) == 4
    tiny = DataUrlCache(max_bytes=10)  # each URL is longer than this: none is kept
    tiny.url(paths[1])
    tiny.url(paths[1])
    assert len(reads) == 6


def test_bytes_in_memory_are_checked_and_sent_in_their_own_format(tmp_path: Path) -> None:
    path = tmp_path / "p.gif"
    Image.new("RGB", (5, 5), "red").save(path)
    url = image_data_url(EncodedImage(path.read_bytes(), name="image 1"))
    assert url.startswith("data:image/gif;base64,")
    with pytest.raises(ImageError, match="not an image file: image 2"):
        DataUrlCache().url(EncodedImage(b"hello", name="image 2"))
