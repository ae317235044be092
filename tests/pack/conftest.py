from __future__ import annotations

from pathlib import Path

import pytest

from .pack_corpus import make_corpus


@pytest.fixture(scope="session")
def gen_corpus(tmp_path_factory, smollm2_tokenizer) -> Path:
    """Six jsonl files, four domains (web, code, book, qa) with different length profiles."""
    folder = tmp_path_factory.mktemp("gen_corpus")
    make_corpus(folder)
    return folder


@pytest.fixture(scope="session")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


@pytest.fixture(scope="session")
def gen_corpus_many(tmp_path_factory, smollm2_tokenizer) -> Path:
    """The same kind of corpus split into 24 files (lets a small build read a subset)."""
    folder = tmp_path_factory.mktemp("gen_corpus_many")
    make_corpus(folder, n_files=24, seed=5)
    return folder
