"""engine.token_chars: a token never covers more characters than its bound, and the bound is None when unknown."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from engine.token_chars import cannot_fit, max_token_chars

CORPUS = ["the quick brown fox jumps over the lazy dog", "    indented code = [1, 2, 3]", "ünïcödé テキスト 文本 😀",
          "=" * 40, " " * 64]


def hostile_texts(tokenizer: Tokenizer) -> list[str]:
    """Texts made to pack as many characters into each token as the vocabulary allows."""
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    longest = max(vocab, key=len)
    rng = random.Random(0)
    planes = [(0x20, 0x7e), (0xa0, 0x2ff), (0x300, 0x36f), (0x3040, 0x30ff), (0x4e00, 0x9fff), (0x1f600, 0x1f64f)]
    mixed = "".join(chr(rng.randint(*rng.choice(planes))) for _ in range(3000))
    return [tokenizer.decode([vocab[longest]]) * 300, *(text * 50 for text in CORPUS), mixed, "a" * 5000, "\n" * 999]


def trained(pre_tokenizer: Any, **bpe: Any) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(**bpe))
    tokenizer.pre_tokenizer = pre_tokenizer
    specials = [bpe["unk_token"]] if "unk_token" in bpe else []
    tokenizer.train_from_iterator(CORPUS * 20, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                                   special_tokens=specials))
    return tokenizer


def check_bound(tokenizer: Tokenizer) -> int:
    bound = max_token_chars(json.loads(tokenizer.to_str()))
    assert bound is not None
    for text in hostile_texts(tokenizer):
        tokens = len(tokenizer.encode(text, add_special_tokens=False).ids)
        assert len(text) <= tokens * bound, (text[:40], tokens, bound)
        assert not cannot_fit(len(text), tokens, bound)  # never refuses what fits
    return bound


def test_the_tiny_byte_level_tokenizer_never_packs_more_than_its_bound(tiny_siglip: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tiny_siglip / "tokenizer.json"))
    assert check_bound(tokenizer) == max(len(token) for token in tokenizer.get_vocab(with_added_tokens=False))


def test_a_sentencepiece_style_tokenizer_never_packs_more_than_its_bound() -> None:
    check_bound(trained(pre_tokenizers.Metaspace(), byte_fallback=True, unk_token="<unk>"))


@pytest.mark.parametrize("change", [
    pytest.param(lambda t: setattr(t, "normalizer", normalizers.NFKC()), id="NFKC-composes"),
    pytest.param(lambda t: setattr(t, "normalizer", normalizers.Sequence([normalizers.NFD(), normalizers.Strip()])),
                 id="Strip-in-a-sequence"),
    pytest.param(lambda t: setattr(t, "normalizer", normalizers.Replace(" ", "")), id="Replace-deletes"),
    pytest.param(lambda t: setattr(t, "pre_tokenizer", pre_tokenizers.Whitespace()), id="Whitespace-drops-spaces"),
    pytest.param(lambda t: setattr(t, "pre_tokenizer", pre_tokenizers.Split(" ", "removed")), id="Split-removed"),
    pytest.param(lambda t: t.enable_truncation(16), id="truncation"),
])
def test_a_tokenizer_that_may_shrink_text_has_no_bound(change: Any) -> None:
    tokenizer = trained(pre_tokenizers.ByteLevel())
    assert max_token_chars(json.loads(tokenizer.to_str())) is not None
    change(tokenizer)
    assert max_token_chars(json.loads(tokenizer.to_str())) is None


def test_fused_unknowns_and_other_models_have_no_bound() -> None:
    fused = trained(pre_tokenizers.Metaspace(), unk_token="<unk>", fuse_unk=True)
    assert max_token_chars(json.loads(fused.to_str())) is None
    unknown = "\u0fff" * 1000  # a character the vocabulary lacks
    assert len(fused.encode(unknown).ids) <= 2  # a leading "▁", then one token for all 1000
    assert max_token_chars(json.loads(Tokenizer(models.WordPiece({"[UNK]": 0}, unk_token="[UNK]")).to_str())) is None
    assert max_token_chars({"model": "not a model"}) is None


def test_cannot_fit_is_false_when_the_bound_is_unknown() -> None:
    assert cannot_fit(41, 10, 4) and not cannot_fit(40, 10, 4) and not cannot_fit(10**9, 10, None)
