"""Needle cell construction: exact lengths, sentence-boundary insertion, edges, one tokenization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from longctx.eval.generate import EvalError
from longctx.eval.haystack import HaystackError, default_haystack, load_haystack
from longctx.eval.needle import (
    PAPER_DEPTHS,
    PAPER_LENGTHS,
    CellBuilder,
    NeedleConfig,
    make_instance,
    sentence_boundaries,
)


class CountingBackend:
    """Wraps a tokenizers backend and records the length of every text it encodes."""

    def __init__(self, inner):
        self.inner = inner
        self.lengths: list[int] = []

    def encode(self, text, add_special_tokens=False):
        self.lengths.append(len(text))
        return self.inner.encode(text, add_special_tokens=add_special_tokens)


class TokWrapper:
    def __init__(self, tok):
        self.backend = CountingBackend(tok.backend)


@pytest.fixture(scope="module")
def essays_text(paul_graham_essays) -> str:
    return load_haystack(paul_graham_essays).text


def _ends_sentence(tok, ids) -> bool:
    return tok.decode(ids).rstrip()[-1:] in ".!?"


@pytest.mark.parametrize("kind", ["paper", "ruler"])
def test_cells_have_exact_length_and_needle_at_boundary(smollm2_tokenizer, essays_text, kind):
    tok = smollm2_tokenizer
    builder = CellBuilder(tok, essays_text, 4096)
    for length in (700, 1000, 2048, 4096):
        for depth in (0, 11, 33, 50, 89, 100):
            inst = make_instance(kind, 42, length, depth)
            cell = builder.build(length, depth, inst)
            assert len(cell.ids) == length
            needle_ids = tok.encode_plain([inst.needle_text])[0]
            got = cell.ids[cell.needle_start : cell.needle_start + cell.needle_tokens]
            assert got == needle_ids
            n = cell.context_tokens
            target = int(n * depth / 100)
            if depth == 0:
                assert cell.insert_at == 0
            elif depth == 100:
                assert cell.insert_at == n  # the paper appends at the end
                suffix = tok.encode_plain([inst.suffix])[0]
                assert cell.ids[cell.needle_start + cell.needle_tokens :] == suffix
            else:
                assert 0 < cell.insert_at <= target
                # the context token just before the needle ends a sentence ...
                assert _ends_sentence(tok, cell.ids[cell.needle_start - 1 : cell.needle_start])
                # ... and no later boundary <= target was skipped
                later = builder.bounds[
                    (builder.bounds > cell.insert_at) & (builder.bounds <= target)
                ]
                assert later.size == 0
                # the needle sits near the requested depth (PG sentences are short)
                assert target - cell.insert_at < 100


def test_haystack_is_tokenized_once(smollm2_tokenizer, essays_text):
    wrapped = TokWrapper(smollm2_tokenizer)
    builder = CellBuilder(wrapped, essays_text, 8192)
    for length in (1024, 2048, 4096, 8192):
        for depth in (0, 50, 100):
            builder.build(length, depth, make_instance("ruler", 1, length, depth))
    long_encodes = [n for n in wrapped.backend.lengths if n > 1000]
    assert long_encodes == [len(essays_text)]  # only the haystack itself, once


def test_short_haystack_is_repeated(smollm2_tokenizer):
    text = "One sentence here. Another one there! A third? " * 20
    builder = CellBuilder(smollm2_tokenizer, text, 2000)
    assert builder.repeats > 1
    cell = builder.build(2000, 50, make_instance("paper", 0, 2000, 50))
    assert len(cell.ids) == 2000
    assert builder.ids.size >= cell.context_tokens


def test_too_short_length_is_an_error(smollm2_tokenizer):
    builder = CellBuilder(smollm2_tokenizer, default_haystack().text[:20000], 1000)
    with pytest.raises(EvalError, match="too short"):
        builder.build(40, 50, make_instance("ruler", 0, 40, 50))


def test_sentence_boundaries_rule():
    text = "Hi there. Dr.Who is 3.5 feet! Ok? end"
    # hand-made offsets: one "token" per whitespace-separated word
    offsets, pos = [], 0
    for w in text.split(" "):
        offsets.append((pos, pos + len(w)))
        pos += len(w) + 1
    # words: Hi, there., Dr.Who, is, 3.5, feet!, Ok?, end -> boundaries after 2, 6, 7
    assert sentence_boundaries(text, offsets).tolist() == [2, 6, 7]


def test_paper_grid_matches_facts():
    assert len(PAPER_LENGTHS) == 40 and len(PAPER_DEPTHS) == 10
    assert PAPER_LENGTHS[:4] == [1000, 4256, 7513, 10769] and PAPER_LENGTHS[-1] == 128000
    assert PAPER_DEPTHS == [0, 11, 22, 33, 44, 56, 67, 78, 89, 100]
    cfg = NeedleConfig(paper_grid=True)
    cfg.validate()
    assert len(cfg.lengths) * len(cfg.depths) == 400


def test_ruler_instance_is_seeded_and_singular():
    a = make_instance("ruler", 42, 1024, 50)
    assert a == make_instance("ruler", 42, 1024, 50)
    assert a != make_instance("ruler", 42, 2048, 50)
    value = a.refs[0]
    assert len(value) == 7 and value.isdigit()
    assert a.needle_text.startswith(" One of the special magic numbers for ")
    assert a.needle_text.endswith(f" is: {value}.")
    assert a.prefix.startswith("A special magic number is hidden")
    assert a.suffix.endswith("mentioned in the provided text is")


def test_config_validation():
    with pytest.raises(EvalError, match="needle"):
        NeedleConfig(needle="haystack").validate()
    with pytest.raises(EvalError, match="depths"):
        NeedleConfig(depths=[120]).validate()


def test_haystack_folder_sorted_and_errors(tmp_path: Path, paul_graham_essays):
    (tmp_path / "b.txt").write_text("second file.")
    (tmp_path / "a.txt").write_text("first file.")
    (tmp_path / "notes.md").write_text("ignored")
    hay = load_haystack(tmp_path)
    assert hay.text == "first file.\n\nsecond file."
    assert hay.files == ("a.txt", "b.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HaystackError, match="no .txt"):
        load_haystack(empty)
    with pytest.raises(HaystackError, match="no such"):
        load_haystack(tmp_path / "missing")
    essays = load_haystack(paul_graham_essays)
    assert essays.files == tuple(sorted(essays.files)) and len(essays.files) > 40
    assert len(essays.sha256) == 64


def test_default_haystack_is_stdlib_prose(smollm2_tokenizer):
    hay = default_haystack()
    assert hay.source == "pydoc_data.topics" and len(hay.text) > 100_000
    ids = np.asarray(smollm2_tokenizer.encode_plain([hay.text[:50_000]])[0])
    assert ids.size > 5_000
