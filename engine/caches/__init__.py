"""Everything the engine keeps in memory besides the weights, and its bounds.

- ``kv``: the KV caches themselves. ``ReservedLayer`` (one conversation,
  grown 256 positions at a time) and ``BatchCache`` (the running batch's
  rows, right-padded under an attention mask).
- ``reuse``: prefix reuse. ``KeptContexts`` keeps the KV caches of the last
  ``Engine.kept_contexts`` contexts (``max(4, max_batch)``; least recently
  used dropped first); a new prompt reuses the one sharing the longest prefix.
- ``features``: ``ImageCache``, the last 64 preprocessed pictures and the
  last 64 images' vision features, by content.

The static KV cache of compiled decoding is ``static_decode``'s own.
"""
