"""RoPE: closed-form inverse frequencies vs transformers' init functions vs the built model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from longctx.rope import (
    apply_rope,
    closed_form_inv_freq,
    dynamic_ntk_effective_base,
    model_inv_freq,
    paper_effective_base,
)

HEAD_DIM = 32
CASES = [
    ("default", dict(theta=500_000.0)),
    ("linear", dict(theta=10_000.0, factor=4.0)),
    ("dynamic", dict(theta=10_000.0, factor=10.0, original_max_positions=16)),
    ("yarn", dict(theta=10_000.0, factor=8.0, original_max_positions=32)),
    ("llama3", dict(theta=500_000.0, factor=8.0, original_max_positions=64,
                    low_freq_factor=1.0, high_freq_factor=4.0)),
]


def small_config(max_pos: int = 64) -> LlamaConfig:
    return LlamaConfig(vocab_size=64, hidden_size=HEAD_DIM * 2, intermediate_size=64,
                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                       max_position_embeddings=max_pos, use_cache=False)


def test_default_formula_by_hand():
    inv, scale = closed_form_inv_freq({"rope_type": "default", "rope_theta": 400_000.0}, 8)
    expected = [1.0, 400_000.0 ** -0.25, 400_000.0 ** -0.5, 400_000.0 ** -0.75]
    assert np.allclose(inv, expected, rtol=1e-12) and scale == 1.0


@pytest.mark.parametrize("kind,kw", CASES, ids=[c[0] for c in CASES])
def test_inv_freq_matches_transformers_and_model(kind, kw):
    seq_len = 128
    cfg = small_config()
    params = apply_rope(cfg, rope_type=kind, seq_len=seq_len, **kw)
    assert cfg.rope_parameters["rope_type"] == kind
    assert cfg.rope_parameters["rope_theta"] == kw["theta"]
    if kind == "dynamic":  # transformers' L0 is max_position_embeddings
        assert cfg.max_position_embeddings == kw["original_max_positions"]
    else:
        assert cfg.max_position_embeddings >= seq_len
    mine, my_scale = closed_form_inv_freq(params, HEAD_DIM, seq_len=seq_len,
                                          max_position_embeddings=cfg.max_position_embeddings)
    if kind == "default":
        hf, hf_scale = LlamaForCausalLM(cfg).model.rotary_emb.compute_default_rope_parameters(cfg)
    else:
        hf, hf_scale = ROPE_INIT_FUNCTIONS[kind](cfg, torch.device("cpu"), seq_len=seq_len)
    np.testing.assert_allclose(hf.double().numpy(), mine, rtol=2e-6)
    assert math.isclose(float(hf_scale), my_scale, rel_tol=1e-6)

    model = LlamaForCausalLM(cfg).eval()
    if kind == "dynamic":
        # frequencies change on the fly once positions pass L0: run a 128-token forward
        with torch.no_grad():
            model(torch.zeros(1, seq_len, dtype=torch.long), use_cache=False)
    np.testing.assert_allclose(model_inv_freq(model), mine, rtol=2e-6)
    if kind != "default":  # the scaled types really differ from plain RoPE at this base
        plain, _ = closed_form_inv_freq({"rope_type": "default", "rope_theta": kw["theta"]},
                                        HEAD_DIM)
        assert not np.allclose(plain, mine)


def test_dynamic_ntk_effective_base_paper_value():
    # Fu et al. 2024: HF dynamic NTK, factor 10, 81,920 tokens, LLaMA-2 (base 1e4, L0 4096, d 128)
    # base' = 1e4 * (10 * 81920 / 4096 - 9) ** (128 / 126) = 1e4 * 191 ** (64 / 63)
    expected = 1e4 * 191 ** (64 / 63)
    assert math.isclose(paper_effective_base(), expected, rel_tol=1e-12)
    assert 2.07e6 < paper_effective_base() < 2.09e6
    assert dynamic_ntk_effective_base(1e4, 10, 4096, 4096, 128) == 1e4  # no scaling inside L0


def test_dynamic_effective_base_equals_dynamic_frequencies():
    """`default` at the effective base reproduces HF dynamic NTK at that length exactly."""
    cfg = small_config()
    apply_rope(cfg, rope_type="dynamic", theta=1e4, factor=10.0, original_max_positions=16)
    hf, _ = ROPE_INIT_FUNCTIONS["dynamic"](cfg, torch.device("cpu"), seq_len=128)
    eff = dynamic_ntk_effective_base(1e4, 10.0, 128, 16, HEAD_DIM)
    plain, _ = closed_form_inv_freq({"rope_type": "default", "rope_theta": eff}, HEAD_DIM)
    np.testing.assert_allclose(hf.double().numpy(), plain, rtol=2e-6)


def test_presets_write_the_derived_bases():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1] / "configs"
    xiong = yaml.safe_load((root / "llama2-7b-80k-base500k.yaml").read_text())
    paper = yaml.safe_load((root / "llama2-7b-80k-paper-ntk.yaml").read_text())
    assert xiong["rope_theta"] == 500_000 and xiong["seq_len"] == 81_920
    assert paper["seq_len"] == 81_920
    assert math.isclose(paper["rope_theta"], paper_effective_base(), rel_tol=1e-6)
    from longctx.train.config import TrainConfig

    for name in ("llama2-7b-80k-base500k", "llama2-7b-80k-paper-ntk", "demo-smollm2-cpu"):
        preset = yaml.safe_load((root / f"{name}.yaml").read_text())
        cfg = TrainConfig(**{"data": "d", "out": "o", **preset})  # only TrainConfig keys
        cfg._validate_values()  # values in range (the data folder is checked at run time)
