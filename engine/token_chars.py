"""The most characters one token can cover, read from a tokenizer's own vocabulary.

Tokenizing is the costly part of building a prompt: a 30 MB message took
minutes and gigabytes before the window check refused it. Text of more than
``window * max_token_chars`` characters needs more tokens than the window
holds, so it can be refused from its length alone, with no tokenizing
(``cannot_fit``).

For a BPE tokenizer every token's text is one vocabulary entry, and an
entry's length bounds the characters of input it covers: a byte-level entry
has one character per byte (an input character is one to four bytes), a
SentencePiece-style entry spells a space as one ``▁`` and a fallback byte
as ``<0xNN>``. That holds only if nothing shrinks the text before the model
sees it, so the bound is ``None`` (unknown: tokenize and count) for a
normalizer that may compose or delete characters (NFC, NFKC, Strip,
Replace...), a pre-tokenizer that drops text (Whitespace, Bert, a Split that
removes its matches), a model that fuses runs of unknown characters into one
token, another model type, or truncation.
"""

from __future__ import annotations

from typing import Any

# Normalizers that never make text shorter (they keep, expand or prepend characters).
_KEEPING_NORMALIZERS = {"Lowercase", "NFD", "NFKD", "Prepend"}
# Pre-tokenizers that only split or map characters one to one (Split is checked for "Removed").
_KEEPING_PRE_TOKENIZERS = {"ByteLevel", "Metaspace", "Digits", "Punctuation", "UnicodeScripts", "Split"}


def max_token_chars(tokenizer: dict[str, Any]) -> int | None:
    """The most input characters one token of ``tokenizer`` (tokenizer.json, parsed) covers; None if unknown."""
    model = tokenizer.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE" or tokenizer.get("truncation"):
        return None
    if model.get("fuse_unk") and model.get("unk_token") is not None:
        return None
    if not _keeps(tokenizer.get("normalizer"), "normalizers", _KEEPING_NORMALIZERS):
        return None
    if not _keeps(tokenizer.get("pre_tokenizer"), "pretokenizers", _KEEPING_PRE_TOKENIZERS):
        return None
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        return None
    return max(1, max(len(token) for token in vocab))


def _keeps(step: Any, members: str, keeping: set[str]) -> bool:
    """True if a normalizer or pre-tokenizer (``None``, one, or a Sequence of them) never shortens text."""
    if step is None:
        return True
    if not isinstance(step, dict):
        return False
    kind = step.get("type")
    if kind == "Sequence":
        parts = step.get(members)
        return isinstance(parts, list) and all(_keeps(part, members, keeping) for part in parts)
    if kind == "Split" and str(step.get("behavior", "")).lower() == "removed":
        return False
    return kind in keeping


def cannot_fit(chars: int, window: int, per_token: int | None) -> bool:
    """True if ``chars`` characters of text surely need more than ``window`` tokens (never when unknown)."""
    return per_token is not None and chars > window * per_token


__all__ = ["cannot_fit", "max_token_chars"]
