"""The growing KV cache: transformers' ``DynamicCache`` without a copy of the whole cache per token.

transformers' ``DynamicLayer`` concatenates each new position onto its keys
and values, so every decoded token copies the whole cache of every layer.
On a CPU, where decoding is bound by memory bandwidth, that cost about a
tenth of the decode speed at 2,000 tokens of context with the 1.3B model.
``ReservedLayer`` keeps keys and values in a buffer reserved ``CHUNK``
positions at a time and hands out views of the part in use: a new position
is one small copy, and the buffer is copied only when it fills up. Cropping
(prefix reuse) just shortens the view; the next positions overwrite what
was cut.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class ReservedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views of a buffer grown ``CHUNK`` positions at a time."""

    CHUNK = 256

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        held = self.get_seq_length()
        need = held + key_states.shape[-2]
        reserved = getattr(self, "_reserved", None)
        if reserved is None or need > reserved[0].shape[-2] or reserved[0].dtype != key_states.dtype \
                or reserved[0].device != key_states.device:
            capacity = -(-need // self.CHUNK) * self.CHUNK
            grown = tuple(s.new_empty((*s.shape[:-2], capacity, s.shape[-1])) for s in (key_states, value_states))
            if held:
                assert self.keys is not None and self.values is not None  # it holds `held` positions
                grown[0][..., :held, :].copy_(self.keys)
                grown[1][..., :held, :].copy_(self.values)
            self._reserved = reserved = grown
        keys, values = reserved
        keys[..., held:need, :].copy_(key_states)
        values[..., held:need, :].copy_(value_states)
        self.keys, self.values = keys[..., :need, :], values[..., :need, :]
        # What lazy initialization records, under the names transformers 4 and 5 use.
        self.dtype, self.device = key_states.dtype, key_states.device
        if hasattr(self, "is_initialized"):
            self.is_initialized = True
        return self.keys, self.values


def new_cache(model) -> DynamicCache:
    """An empty KV cache for ``model``'s language model, of ``ReservedLayer``s."""
    try:
        cache = DynamicCache(config=model.language_model.config)
    except TypeError:  # older transformers take no config
        cache = DynamicCache()
    layers = model.language_model.config.num_hidden_layers
    cache.layers = [ReservedLayer() for _ in range(layers)]
    return cache


class BatchCache:
    """The running batch's keys and values: one row per sequence, each row right-padded to the longest.

    Row ``r`` holds its sequence's positions ``0 .. lengths[r] - 1``; a
    decode step writes each row's new position at its own length
    (``update``) and attends through ``step_inputs``' mask, which hides
    each row's padding. Rows stay packed (``remove`` moves the last row
    into the freed one), so a step runs on exactly the running sequences.
    Buffers grow ``CHUNK`` positions (and rows by doubling, up to
    ``max_rows``) at a time and are freed when the batch empties. Padding
    is zeros or an earlier row's finite values: masked out, and never NaN
    (a masked NaN would still poison the attention's weighted sum).

    It stands in for a transformers ``Cache`` in the language model's
    forward (the attention layers call ``update``); it is never stored:
    a sequence that leaves is copied out, compactly, by ``copy_out``.
    """

    CHUNK = 256

    def __init__(self, max_rows: int):
        self.max_rows = max_rows
        self.lengths: list[int] = []
        self._keys: list[torch.Tensor] = []  # per layer [rows, heads, capacity, head_dim]
        self._values: list[torch.Tensor] = []
        self._rows: torch.Tensor | None = None  # set by step_inputs for the step's update calls
        self._at: torch.Tensor | None = None
        self._width = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def _reserve(self, rows: int, positions: int, like: torch.Tensor, layers: int) -> None:
        have_rows = self._keys[0].shape[0] if self._keys else 0
        have_positions = self._keys[0].shape[2] if self._keys else 0
        if rows <= have_rows and positions <= have_positions:
            return
        new_rows = max(rows, min(self.max_rows, 2 * have_rows))
        new_positions = -(-max(positions, have_positions) // self.CHUNK) * self.CHUNK
        shape = (new_rows, like.shape[1], new_positions, like.shape[3])
        rows_held, held = len(self.lengths), max(self.lengths, default=0)
        for store in (self._keys, self._values):
            old = list(store)
            store[:] = [torch.zeros(shape, dtype=like.dtype, device=like.device) for _ in range(layers)]
            for grown, was in zip(store, old, strict=False):  # none were there before the first row
                grown[:rows_held, :, :held].copy_(was[:rows_held, :, :held])

    def add(self, cache) -> int:
        """Copy a sequence's prefilled transformers cache in as a new last row; returns the row."""
        from .reuse import keys_values

        layers = [keys_values(layer) for layer in cache.layers]
        length = layers[0][0].shape[2]
        self._reserve(len(self.lengths) + 1, length + 1, layers[0][0], len(layers))
        row = len(self.lengths)
        for index, (keys, values) in enumerate(layers):
            self._keys[index][row, :, :length].copy_(keys[0])
            self._values[index][row, :, :length].copy_(values[0])
        self.lengths.append(length)
        return row

    def copy_out(self, row: int, into):
        """Fill the empty transformers cache ``into`` with copies of ``row``'s positions."""
        held = self.lengths[row]
        for index, (keys, values) in enumerate(zip(self._keys, self._values, strict=True)):
            into.update(keys[row : row + 1, :, :held].clone(), values[row : row + 1, :, :held].clone(), index)
        return into

    def remove(self, row: int) -> None:
        """Drop ``row``; the last row moves into its place (so the caller moves its sequence too)."""
        last = len(self.lengths) - 1
        if row != last:
            held = self.lengths[last]
            for store in (self._keys, self._values):
                for tensor in store:
                    tensor[row, :, :held].copy_(tensor[last, :, :held])
            self.lengths[row] = held
        self.lengths.pop()
        if not self.lengths:  # an idle engine holds no batch memory
            self._keys, self._values = [], []

    def step_inputs(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions [n, 1], additive attention mask [n, 1, 1, width]) for one decode step of every row."""
        device = self._keys[0].device
        n = len(self.lengths)
        self._reserve(n, max(self.lengths) + 1, self._keys[0], len(self._keys))
        self._width = max(self.lengths) + 1
        self._rows = torch.arange(n, device=device)
        self._at = torch.tensor(self.lengths, device=device)
        visible = torch.arange(self._width, device=device)[None, :] <= self._at[:, None]
        mask = torch.zeros((n, 1, 1, self._width), dtype=dtype, device=device)
        mask.masked_fill_(~visible[:, None, None, :], torch.finfo(dtype).min)
        return self._at[:, None], mask

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write each row's new position (key_states [n, heads, 1, head_dim]); the rows' keys and values so far."""
        assert self._rows is not None and self._at is not None  # step_inputs came first
        n = len(self.lengths)
        keys, values = self._keys[layer_idx], self._values[layer_idx]
        keys[self._rows, :, self._at] = key_states[:, :, 0].to(keys.dtype)
        values[self._rows, :, self._at] = value_states[:, :, 0].to(values.dtype)
        return keys[:n, :, : self._width], values[:n, :, : self._width]

    def advance(self) -> None:
        """After a step: every row holds one more position."""
        self.lengths = [length + 1 for length in self.lengths]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return max(self.lengths, default=0)  # only asked by transformers 4 when no cache_position is given

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self._keys, *self._values))
