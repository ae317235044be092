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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random 2-layer LLaMA with the embedded SmolLM2 tokenizer, saved as an HF folder
    (loads like any local model; fast enough to run whole eval grids on CPU)."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from longctx.embedded import embedded_tokenizer_dir

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=1024, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(str(folder))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(embedded_tokenizer_dir() / name, folder / name)
    return folder
