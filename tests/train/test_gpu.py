"""CUDA-only checks of the GPU paths: flex_attention document masks and a bf16 training run."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_flex_attention_packed_equals_separate():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=500, hidden_size=128, intermediate_size=256,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, use_cache=False)
    m = LlamaForCausalLM._from_config(cfg, attn_implementation="flex_attention",
                                      dtype=torch.float32).cuda().eval()
    cuts = [0, 100, 333, 512]
    ids = torch.randint(0, 500, (1, 512), device="cuda")
    pos = torch.cat([torch.arange(b - a) for a, b in zip(cuts[:-1], cuts[1:], strict=True)])
    with torch.no_grad():
        packed = m(ids, position_ids=pos[None].cuda(), use_cache=False).logits[0]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            alone = m(ids[:, a:b], use_cache=False).logits[0]
            torch.testing.assert_close(packed[a:b], alone, rtol=1e-3, atol=1e-3)


def test_cuda_bf16_doc_mask_training(packed_dir, tmp_path):
    from longctx.config import build_config
    from longctx.train.config import TrainConfig
    from longctx.train.loop import train

    cfg = build_config(TrainConfig, cli={
        "data": str(packed_dir), "out": str(tmp_path / "o"), "steps": 3, "seq_len": 64,
        "batch_tokens": "256", "lr": 3e-3, "doc_mask": "mask", "device": "cuda",
    })
    manifest = train(cfg)
    recs = [json.loads(x) for x in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert manifest["status"] == "done" and recs[-1]["loss"] < recs[0]["loss"]
    assert all("gpu_mem_gb" in r for r in recs)
