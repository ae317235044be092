"""Fixtures of the data tests: tiny generated corpora and a word-level tokenizer whose token
counts are known by construction (one token per whitespace-separated word, no BOS)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def word_tokenizer_dir(tmp_path_factory) -> Path:
    """A WordLevel tokenizer.json: every whitespace-separated word is one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, "w": 3, "x": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tmp_path_factory.mktemp("wordtok")
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="session")
def demo_small(tmp_path_factory) -> Path:
    """A 1.5 MB demo corpus (all domains), written once per session."""
    from longctx.data.demo_corpus import write_demo_corpus

    out = tmp_path_factory.mktemp("demo")
    write_demo_corpus(out, max_mb=1.5, num_files=3)
    return out
