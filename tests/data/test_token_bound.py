"""The token bound: at least the real count on real and adversarial text, each word one piece
of the tokenizer's own pre-tokenizer, and no bound for tokenizers its argument does not cover."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from longctx.data.token_bound import WORD, TokenBound, supports, token_bound
from longctx.data.tokenizer import load_tokenizer

# characters where GPT-2's pieces change: spaces and other whitespace, the apostrophe and
# contractions, digits, punctuation, non-ASCII letters and marks, an added token's text
TRICKY = ["a", "b", "Z", "word", "the", " ", " ", "  ", "\t", "\n", "\r\n", "'", "'s", "'t",
          "'ll", "0", "42", ",", ".", "-", "(", '"', "é", "ж", "中", "\u0301", "\u00a0",
          "\u2028", "\x1c", "\x85", "\x00", "\x7f", "😀", "’", "<|endoftext|>", "<", "|"]


@pytest.fixture(scope="module")
def backend():
    return load_tokenizer(None).backend


def _count(backend, texts: list[str]) -> list[int]:
    return [len(e) for e in backend.encode_batch_fast(texts, add_special_tokens=False)]


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(TRICKY) for _ in range(rng.randint(1, 60))) for _ in range(n)]


def _upper(bound: TokenBound, texts: list[str]) -> list[int | None]:
    return bound.upper([t.encode("utf-8") for t in texts])


def _pieces(backend, text: str) -> set[tuple[int, int]]:
    """(start, end) byte offsets of the pre-tokenizer's pieces of ``text``."""
    starts = [0]
    for ch in text:
        starts.append(starts[-1] + len(ch.encode("utf-8")))
    return {(starts[a], starts[b]) for _, (a, b) in backend.pre_tokenizer.pre_tokenize_str(text)}


def test_bound_is_never_below_the_real_count_on_adversarial_text(backend):
    bound = TokenBound(backend)
    texts = _random_texts(4000, seed=3)
    for text, up, n in zip(texts, _upper(bound, texts), _count(backend, texts), strict=True):
        if up is None:
            assert "<|endoftext|>" in text  # an added token's text: no bound
        else:
            assert up >= n, repr(text)


def _real_texts(samples, per_file: int) -> list[str]:
    return [json.loads(x)["text"] for f in sorted(samples.rglob("*.jsonl"))
            for x in f.read_text(encoding="utf-8").splitlines()[:per_file]]


@pytest.mark.parametrize("real", [False, True], ids=["adversarial", "redpajama"])
def test_every_word_is_one_piece_of_the_tokenizer_itself(backend, real, request):
    """The argument's step that can fail: each WORD match is exactly one pre-tokenizer piece
    (HF's own regex engine)."""
    if real:
        samples = request.getfixturevalue("redpajama_samples")
        texts = [t[:3000] for t in _real_texts(samples, 40)]
    else:
        texts = _random_texts(3000, seed=4)
    words = 0
    for text in texts:
        if "<|endoftext|>" in text:
            continue
        pieces = _pieces(backend, text)
        for m in WORD.finditer(text.encode("utf-8")):
            assert m.span() in pieces, (text, m.group())
            words += 1
    assert words > 1000


def test_bound_holds_on_real_documents_of_every_domain_and_proves_short_ones(
        backend, redpajama_samples):
    bound = TokenBound(backend)
    texts = []
    for k, text in enumerate(_real_texts(redpajama_samples, 60)):
        texts += [text, text[: 300 + 37 * (k % 60)]]  # whole, and a short head
    ups, real = _upper(bound, texts), _count(backend, texts)
    assert all(u is not None and u >= n for u, n in zip(ups, real, strict=True))
    short = [(u, n) for u, n, t in zip(ups, real, texts, strict=True)
             if n < 512 <= len(t.encode("utf-8"))]
    proven = sum(1 for u, _ in short if u < 512)
    assert short and proven > len(short) / 3  # bytes alone prove none of these short


def test_english_paragraph_is_proved_short_though_its_bytes_are_not(backend):
    text = ("The build reads every file once, and then tokenizes only what the budgets "
            "need. Short documents that their draw did not keep are never eligible. ") * 8
    up, = _upper(TokenBound(backend), [text])
    n, = _count(backend, [text])
    assert len(text) > 1000 and n <= up < 512


def test_word_counts_come_from_the_tokenizer(backend):
    """A word the vocabulary holds is counted as the tokenizer encodes it alone."""
    bound = TokenBound(backend)
    bound.upper([b"x the tokenizer"])
    for w, saving in bound._saving.items():
        assert saving == len(w) - _count(backend, [w.decode()])[0]


def test_no_bound_where_the_argument_does_not_hold(backend):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers

    assert supports(backend) and token_bound(backend) is token_bound(backend)
    prefixed = Tokenizer.from_str(backend.to_str())
    prefixed.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    normalized = Tokenizer.from_str(backend.to_str())
    normalized.normalizer = normalizers.NFKC()
    split = Tokenizer.from_str(backend.to_str())
    split.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(),
                                                    pre_tokenizers.ByteLevel()])
    for other in (prefixed, normalized, split):
        assert not supports(other) and token_bound(other) is None


def test_no_bound_for_llama2(llama2_tokenizer_model, tmp_path):
    pytest.importorskip("sentencepiece", reason="transformers converts tokenizer.model with it")
    shutil.copy(llama2_tokenizer_model, tmp_path / "tokenizer.model")
    assert token_bound(load_tokenizer(tmp_path).backend) is None
