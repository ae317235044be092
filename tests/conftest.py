"""Shared fixtures. Reference data lives in ../shared/reference (never in the repository);
tests that need it skip cleanly when it is absent (a user's clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = Path(os.environ.get("LONGCTX_SHARED_REFERENCE", REPO.parent / "shared" / "reference"))


def _reference(sub: str) -> Path:
    path = SHARED_REFERENCE / sub
    if not path.exists():
        pytest.skip(f"reference data not available: {path}")
    return path


@pytest.fixture(scope="session")
def redpajama_samples() -> Path:
    """Real RedPajama documents of all 7 domains (folder)."""
    return _reference("redpajama_samples")


@pytest.fixture(scope="session")
def slimpajama_jsonl() -> Path:
    """The RedPajama samples re-wrapped in the SlimPajama schema (one jsonl file)."""
    return _reference("redpajama_samples/slimpajama_format_derived.jsonl")


@pytest.fixture(scope="session")
def paul_graham_essays() -> Path:
    return _reference("needle_haystack/PaulGrahamEssays")


@pytest.fixture(scope="session")
def ruler_essays_json() -> Path:
    return _reference("ruler/PaulGrahamEssays.json")


@pytest.fixture(scope="session")
def llama2_tokenizer_model() -> Path:
    return _reference("tokenizer/llama2_tokenizer.model")


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The embedded default tokenizer (converted once from the GGUF and cached)."""
    from longctx.data.tokenizer import load_tokenizer

    return load_tokenizer(None)
