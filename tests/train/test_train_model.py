"""Train builds its model through the one builder of ``longctx.models``."""

from __future__ import annotations

import torch

from longctx.data.tokenizer import load_tokenizer
from longctx.models import load_causal_lm
from longctx.train.config import TrainConfig, tokenizer_dir_for
from longctx.train.model import build_model, tiny_config, train_rope


def test_tiny_build_model_equals_the_one_builder(packed_dir, tmp_path):
    cfg = TrainConfig(data=str(packed_dir), out=str(tmp_path / "o"), steps=1, seq_len=64,
                      seed=5, rope_theta=250_000.0)
    model, tok_dir, params = build_model(cfg)
    assert tok_dir == tokenizer_dir_for(cfg.model, cfg.data_manifest)
    tok = load_tokenizer(tok_dir)
    direct, folder, direct_params = load_causal_lm(
        tiny_config(cfg, tok.vocab_size, tok.bos_id, tok.eos_id), rope=train_rope(cfg),
        min_positions=64, seed=cfg.seed,
    )
    assert folder is None
    assert params == direct_params == {"rope_type": "default", "rope_theta": 250_000.0}
    assert type(model) is type(direct)
    assert model.config.to_dict() == direct.config.to_dict()
    a, b = model.state_dict(), direct.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == torch.float32 for k in a)
    other, _, _ = build_model(TrainConfig(data=str(packed_dir), out="o", steps=1, seq_len=64,
                                          seed=6, rope_theta=250_000.0))
    assert not torch.equal(other.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_attention_key_reaches_the_model(packed_dir, tmp_path):
    for attention, expected in (("auto", "sdpa"), ("sdpa", "sdpa"), ("flex", "flex_attention")):
        cfg = TrainConfig(data=str(packed_dir), out=str(tmp_path / "o"), steps=1, seq_len=64,
                          doc_mask="mask", attention=attention)
        model, _, _ = build_model(cfg, device_type="cpu")
        assert model.config._attn_implementation == expected, attention
