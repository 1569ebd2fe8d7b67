"""Prefix reuse: the KV caches of recent contexts, kept between turns (``KeptContexts``).

The engine keeps the KV caches of the last few contexts it ran (a prompt
and the answer fed back), whatever conversation, pane or HTTP request they
came from. A new prompt is compared position by position with each of
them, and the one sharing the longest common prefix is reused (a tie goes
to the most recently used): only the part after that prefix is prefilled.
Positions are compared by token id and, for image tokens (which all share
one id), by the image's content hash, so a different picture never reuses
another's cache. Requests therefore need no conversation key: the second
turn of a chat finds the first turn's context by its content.

Where the result is kept (``Match``) is decided by content alone: a prompt
that continues the chosen context (it diverges no earlier than the end of
that context's prompt: a next turn, or a regenerated answer) takes that
context over, so a conversation occupies one slot. A prompt that branches
off earlier (another conversation sharing only the system prompt, an edited
earlier turn) copies the shared prefix and leaves the original for its own
conversation, in its place in the eviction order: when more than the
store's bound are kept, the context whose conversation last ran longest ago
is dropped. A caller's ``cache_key`` is only a ``label`` on the contexts it
made (for ``Engine.forget``): one key shared by every request, as a server
may pass, changes nothing.
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


def keys_values(layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """An allocated attention cache layer's keys and values.

    transformers types ``Cache.layers`` as a union that includes linear-attention layers (no keys) and
    gives ``keys`` as Optional (not yet allocated); this model's caches hold allocated attention layers.
    """
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
        raise TypeError(f"{type(layer).__name__} holds no allocated keys and values")
    return keys, values


def copy_cache(source: Any, length: int, into: Any) -> Any:
    """Fill the empty cache ``into`` with copies (never views) of ``source``'s first ``length`` positions."""
    for index, layer in enumerate(source.layers):
        keys, values = keys_values(layer)
        into.update(keys[:, :, :length].clone(), values[:, :, :length].clone(), index)
    return into


def crop_cache(cache: Any, keep: int) -> None:
    """Keep the first ``keep`` positions of a transformers cache."""
    remove = cache.get_seq_length() - keep
    if remove > 0:
        cache.crop(-remove)  # a negative count removes from the end in every transformers release we support


@dataclass
class CachedContext:
    keys: list[PositionKey]  # what the cache holds, position by position
    cache: Any  # a transformers DynamicCache, or the static cache while this context is resident there
    prompt_length: int = 0  # positions of ``keys`` that were the prompt (the rest is the answer fed back)
    label: Hashable | None = None  # the caller's ``cache_key``, for ``Engine.forget``

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

    def newest_first(self) -> list[tuple[Hashable, Any]]:
        """(key, value) pairs, most recently used first; leaves the order alone."""
        return list(reversed(self._items.items()))


@dataclass
class Match:
    """Which stored context a prompt reuses, and where its result is kept."""

    source: Hashable | None  # the store key of the context to reuse (None: nothing shared, start afresh)
    context: CachedContext | None
    reused: int  # prompt positions taken from it (at least the last prompt position is always run)
    takes_over: bool  # True: the result replaces ``source`` (a continuation); False: copy the prefix, keep it
    target: Hashable  # the store key the result is put under


def best_match(contexts: LruStore, keys: Sequence[PositionKey], new_key: Hashable) -> Match:
    """The stored context sharing the longest prefix with ``keys`` (ties: the most recently used).

    A continuation keeps its context's store key; a branch, or a prompt
    that shares nothing, is kept under ``new_key``.
    """
    source, context, common = None, None, 0
    for key, stored in contexts.newest_first():
        shared = common_prefix(stored.keys, keys)
        if shared > common:  # strictly longer: an equal one that is more recent was seen first
            source, context, common = key, stored, shared
    reused = min(common, len(keys) - 1)
    if context is None or reused <= 0:
        return Match(None, None, 0, False, new_key)
    takes_over = common >= context.prompt_length
    return Match(source, context, reused, takes_over, source if takes_over else new_key)


class KeptContexts:
    """The contexts one engine keeps for prefix reuse: at most ``max_entries``, least recently used dropped first.

    ``match`` picks what a prompt reuses (``best_match``), ``cache_for``
    hands out a growing cache holding that prefix, ``keep`` stores a
    finished answer's context (prompt and answer fed back). With
    ``enabled`` False nothing is reused or kept.
    """

    def __init__(self, model, max_entries: int, *, enabled: bool = True):
        self.model = model
        self.enabled = enabled
        self.store = LruStore(max_entries)
        self._numbered = 0  # numbers the store keys of kept contexts

    @property
    def max_entries(self) -> int:
        return self.store.max_entries

    @max_entries.setter
    def max_entries(self, value: int) -> None:
        self.store.max_entries = value

    def match(self, keys: Sequence[PositionKey]) -> Match:
        self._numbered += 1
        if not self.enabled:
            return Match(None, None, 0, False, self._numbered)
        return best_match(self.store, keys, self._numbered)

    def cache_for(self, match: Match) -> Any:
        """A growing cache holding ``match.reused`` positions of the matched context."""
        from .kv import new_cache

        if match.context is None or match.source is None:
            return new_cache(self.model)
        if match.takes_over:
            # Taken out of the store while in use: a failed generation leaves no half-written cache behind.
            self.store.pop(match.source)
            crop_cache(match.context.cache, match.reused)
            return match.context.cache
        return copy_cache(match.context.cache, match.reused, new_cache(self.model))

    def keep(self, match: Match, keys: list, cache: Any, prompt_length: int, label: str | None) -> int:
        """Keep a finished answer's context under ``match.target``; returns how many contexts that evicted."""
        return len(self.store.put(match.target, CachedContext(keys, cache, prompt_length=prompt_length, label=label)))

    def forget(self, label: str | None) -> list[Hashable]:
        """Drop the contexts labelled ``label`` (or all of them); returns their store keys."""
        dropped = [key for key, context in self.store.newest_first() if label is None or context.label == label]
        for key in dropped:
            self.store.pop(key)
        return dropped

    def clear(self) -> None:
        self.store.clear()

    def __len__(self) -> int:
        return len(self.store)

    def newest_first(self) -> list[tuple[Hashable, Any]]:
        return self.store.newest_first()
