"""Eval fixtures: a small packed folder built from the real RedPajama samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from .evalhelpers import build_packed


@pytest.fixture(scope="session")
def packed_redpajama(tmp_path_factory, slimpajama_jsonl, smollm2_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("packed")
    return build_packed(folder, slimpajama_jsonl, smollm2_tokenizer)


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    """One intra-op thread: on the shared 2-core machine, 2 spinning torch threads under load
    were measured 5-7x slower than 1 (greedy decoding of a 256-token prompt: 5.1 s vs 1.2 s)."""
    import os

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("LONGCTX_TEST_TORCH_THREADS", "1")))
    yield
    torch.set_num_threads(before)
