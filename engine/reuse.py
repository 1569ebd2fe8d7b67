"""Work kept between turns: the conversation's KV cache and encoded images.

Each conversation (``cache_key``) keeps the KV cache of what the model has
seen so far: the last prompt and the answer fed back. The next prompt is
compared position by position with it; only the part after the longest
common prefix is prefilled. Positions are compared by token id and, for
image tokens (which all share one id), by the image's content hash, so a
different picture never reuses another's cache.

Encoded images are kept by content hash, so a picture is run through the
vision tower once however many turns it stays in the conversation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

PositionKey = Hashable  # an int token id, or (image hash, index) for image positions


def position_keys(input_ids: torch.Tensor, image_keys: Sequence[str], image_id: int) -> list[PositionKey]:
    keys: list[PositionKey] = []
    image, offset = -1, 0
    previous_was_image = False
    for token in input_ids.tolist():
        if token == image_id:
            if not previous_was_image:
                image, offset = image + 1, 0
            keys.append((image_keys[image], offset))
            offset += 1
            previous_was_image = True
        else:
            keys.append(token)
            previous_was_image = False
    return keys


def common_prefix(a: Sequence[PositionKey], b: Sequence[PositionKey]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def crop_cache(cache: Any, keep: int) -> None:
    """Keep the first ``keep`` positions of a transformers cache."""
    remove = cache.get_seq_length() - keep
    if remove > 0:
        cache.crop(-remove)  # a negative count removes from the end in every transformers release we support


@dataclass
class CachedContext:
    keys: list[PositionKey]  # what the cache holds, position by position
    cache: Any  # a transformers DynamicCache, or the static cache while this conversation is resident there

    def nbytes(self) -> int:
        total = 0
        for layer in getattr(self.cache, "layers", []):
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total


class LruStore:
    """A small least-recently-used map; ``put`` returns the keys it evicted."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def peek(self, key: Hashable) -> Any:
        """Like ``get``, but leaves the order alone."""
        return self._items.get(key)

    def pop(self, key: Hashable) -> Any:
        return self._items.pop(key, None)

    def put(self, key: Hashable, value: Any) -> list[Hashable]:
        self._items[key] = value
        self._items.move_to_end(key)
        evicted = []
        while len(self._items) > self.max_entries:
            old, _ = self._items.popitem(last=False)
            evicted.append(old)
        return evicted

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items
