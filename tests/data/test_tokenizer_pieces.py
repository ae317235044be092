"""A text over ``piece_chars`` is encoded in pieces: its ids must equal encoding it whole, for
byte-level BPE (SmolLM2) and SentencePiece BPE (LLaMA-2), on real documents of every
RedPajama domain and on constructed text made to break naive seams. The pieces are made
small here (``piece_chars`` of a few hundred characters to 2 KB) so that every document
crosses many seams; memory is measured by benchmarks/huge_document.py, not here."""

from __future__ import annotations

import dataclasses
import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from longctx.data.tokenizer import _SEAM, Tokenizer, _after_anchor, _seam_holds, load_tokenizer

DOMAINS = ("arxiv", "book", "c4-rp", "cc", "github", "stackexchange", "wiki")
CHARS_PER_DOMAIN = 200_000  # real text per domain (whole documents, the last one cut)
PIECE = 2048


@pytest.fixture(scope="module")
def llama2(llama2_tokenizer_model, tmp_path_factory) -> Tokenizer:
    pytest.importorskip("sentencepiece", reason="transformers converts tokenizer.model with it")
    folder = tmp_path_factory.mktemp("llama2-pieces")
    shutil.copy(llama2_tokenizer_model, folder / "tokenizer.model")
    return load_tokenizer(folder)


@pytest.fixture(params=["smollm2", "llama2"])
def tok(request, smollm2_tokenizer) -> Tokenizer:
    """Each tokenizer family users have (LLaMA-2 skips without the reference model)."""
    if request.param == "smollm2":
        return smollm2_tokenizer
    return request.getfixturevalue("llama2")


def pieces(tok: Tokenizer, piece_chars: int = PIECE) -> Tokenizer:
    return dataclasses.replace(tok, piece_chars=piece_chars)


def whole_ids(tok: Tokenizer, text: str) -> list[int]:
    return tok.backend.encode(text, add_special_tokens=False).ids


def domain_texts(root: Path, domain: str) -> list[str]:
    """Real documents of one domain longer than a piece, up to CHARS_PER_DOMAIN in all."""
    texts, total = [], 0
    for f in sorted((root / domain).glob("*.jsonl")):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                text = json.loads(line)["text"]
                if len(text) <= PIECE:
                    continue
                texts.append(text[: CHARS_PER_DOMAIN - total])
                total += len(texts[-1])
                if total >= CHARS_PER_DOMAIN:
                    return texts
    return texts


@pytest.mark.parametrize("domain", DOMAINS)
def test_pieces_equal_whole_on_real_documents(tok, redpajama_samples, domain):
    texts = domain_texts(redpajama_samples, domain)
    assert sum(map(len, texts)) > 20 * PIECE
    small = pieces(tok)
    got = small.encode_plain(texts)
    for text, ids in zip(texts, got, strict=True):
        assert ids == whole_ids(tok, text)
    # Many seams were really used (not one fallback span per document).
    encode = small.backend.encode_batch
    seams = sum(len(small._seams(t, encode)) for t in texts)
    assert seams >= sum(len(t) for t in texts) // (3 * PIECE)
    docs = small.encode_documents(texts, fast=True)
    assert [list(d) for d in docs] == [[tok.bos_id, *w] for w in got]
    assert small.count_tokens(texts) == [len(d) for d in docs]


def adversarial_texts() -> dict[str, str]:
    """Text built to break seams: no whitespace for long stretches, whitespace runs, CRLF,
    CJK and emoji (multi-byte characters on both sides of a seam, ZWJ sequences, combining
    marks), literal special tokens and SentencePiece's own '▁' in the text."""
    rng = random.Random(7)
    atoms = ["a", "bc", " ", "  ", "\n", "\r\n", "\t", "世界", "👍🏽", "👨‍👩‍👧", "e\u0301",
             "1", "2024", ".", "'s", "<|endoftext|>", "</s>", "▁", "\u00a0", "\u3000", "x"]
    fuzz = "".join(rng.choice(atoms) for _ in range(12_000))
    return {
        "no_whitespace": "x" * 5000 + "".join(rng.choice("abc.,;=+/0123") for _ in range(6000)),
        "long_whitespace": "start" + " " * 3000 + "mid\n" + "\n" * 2500 + "\t \t" * 700 + "end",
        "crlf": "a line of text\r\nanother one\r\n\r\n" * 200,
        "cjk_emoji": ("東京は晴れ 今日 👍🏽 ok 👨‍👩‍👧 家族 ") * 300,
        "combining": ("cafe\u0301 nai\u0308ve re\u0301sume\u0301\n") * 300,
        "specials": ("a <|endoftext|> b </s> <s> c\n") * 300,
        "metaspace": ("▁ ▁▁ a▁ ▁b ▁\n") * 400,
        "leading_space": " " + "word " * 2000,
        "fuzz": fuzz,
    }


@pytest.mark.parametrize("name", sorted(adversarial_texts()))
@pytest.mark.parametrize("piece_chars", [97, 512])
def test_pieces_equal_whole_on_adversarial_text(tok, name, piece_chars):
    text = adversarial_texts()[name]
    assert len(text) > 5 * piece_chars
    small = pieces(tok, piece_chars)
    want = whole_ids(tok, text)
    assert small.encode_plain([text])[0] == want
    assert small.count_tokens([text]) == [len(want) + 1]
    assert list(small.encode_documents([text], fast=True)[0]) == [tok.bos_id, *want]


def test_a_multibyte_character_at_the_piece_target(tok):
    # The piece target (a character index) lands on every position of a 4-byte emoji
    # sequence and of CJK text in turn; str slices never split a UTF-8 sequence.
    unit = "ab 👨‍👩‍👧 東京 "
    for shift in range(len(unit)):
        text = "z" * shift + unit * 40
        small = pieces(tok, len(unit) * 3 + 1)
        assert small.encode_plain([text])[0] == whole_ids(tok, text)


def test_a_text_without_seams_is_encoded_whole(tok):
    text = "0123456789abcdef" * 1000  # no whitespace anywhere: no candidate seam
    small = pieces(tok, 256)
    assert small._seams(text, small.backend.encode_batch) == []
    assert small.encode_plain([text])[0] == whole_ids(tok, text)


def test_seams_that_do_not_hold_are_skipped(llama2):
    # For LLaMA-2 a literal '▁' is a space, and '▁▁'-runs are tokens: a candidate seam inside
    # '▁ ▁ ▁' can fall inside a token. Such candidates fail their check (splitting there
    # would change the ids) and the piecewise ids still equal the whole ones.
    text = ("▁ ▁ " * 300 + "plain words here\n") * 20
    encode = llama2.backend.encode_batch
    candidates = [m.start() for m in _SEAM.finditer(text)][:200]
    failing = [s for s in candidates if not _seam_holds(text, s, encode, llama2.seam_window)]
    assert failing
    s = failing[0]
    left = whole_ids(llama2, text[:s])
    assert left + (_after_anchor(text[s - 1 :], encode) or []) != whole_ids(llama2, text)
    small = pieces(llama2, 300)
    assert not set(small._seams(text, encode)) & set(failing)
    assert small.encode_plain([text])[0] == whole_ids(llama2, text)


def test_a_long_added_token_across_a_seam(tmp_path, smollm2_tokenizer):
    # An added token is matched before pre-tokenization, so it can contain a candidate seam
    # (here 40 of them): the check's window covers the longest added token, so no seam
    # inside it holds.
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as RustTokenizer

    long_token = "begin " + "x y " * 40 + "end"
    backend = RustTokenizer.from_str(smollm2_tokenizer.backend.to_str())
    backend.add_tokens([AddedToken(long_token, normalized=False)])
    tok = Tokenizer("long-added", backend, None, None, piece_chars=200)
    assert tok.seam_window >= len(long_token)
    text = ("words before it " + long_token + " and after it\n") * 30
    want = backend.encode(text, add_special_tokens=False).ids
    assert want.count(backend.token_to_id(long_token)) == 30
    assert tok.encode_plain([text])[0] == want


def test_counts_and_order_with_short_and_long_texts_mixed(tok):
    texts = ["short one", "word " * 3000, "", "x", "line\n" * 2000, "end."]
    small = pieces(tok, 1000)
    docs = small.encode_documents(texts)
    assert [d.dtype for d in docs] == [tok.dtype] * len(texts)
    assert [list(d) for d in docs] == [[tok.bos_id, *whole_ids(tok, t)] for t in texts]
    assert small.count_tokens(texts) == [len(d) for d in docs]
    assert small.encode_plain(texts) == [whole_ids(tok, t) for t in texts]
    eos = dataclasses.replace(small, add_bos=False, add_eos=True)
    assert [list(d) for d in eos.encode_documents(texts, fast=True)] == [
        [*whole_ids(tok, t), tok.eos_id] for t in texts
    ]


def test_ids_only_where_wanted(tok):
    """encode_documents_where counts every document as encode_documents does and builds ids
    only where asked, for texts encoded whole and in pieces, with BOS, with EOS, with none."""
    texts = ["short one", "word " * 3000, "", "x", "line\n" * 2000, "end."]
    small = pieces(tok, 1000)
    asked = []

    def wanted(k: int, n: int) -> bool:
        asked.append((k, n))
        return k in (1, 3) or n > 1500

    for policy in ({}, {"add_bos": False, "add_eos": True}, {"add_bos": False}):
        t = dataclasses.replace(small, **policy)
        docs = t.encode_documents(texts, fast=True)
        asked.clear()
        got = t.encode_documents_where(texts, wanted, fast=True)
        assert asked == [(k, len(d)) for k, d in enumerate(docs)]
        assert [n for n, _ in got] == [len(d) for d in docs] == t.count_tokens(texts)
        for k, ((_, ids), doc) in enumerate(zip(got, docs, strict=True)):
            if wanted(k, len(doc)):
                assert ids.dtype == tok.dtype and np.array_equal(ids, doc)
            else:
                assert ids is None
    assert any(ids is None for _, ids in got) and any(ids is not None for _, ids in got)


def test_piece_size_survives_pickling(smollm2_tokenizer):
    small = pieces(smollm2_tokenizer, 4096)
    again = pickle.loads(pickle.dumps(small))
    assert again.piece_chars == 4096
    text = "some words\n" * 2000
    assert np.array_equal(again.encode_documents([text])[0], small.encode_documents([text])[0])
