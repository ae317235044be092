"""One step of the embedded SmolLM2-135M with base 400K exports a model that trained at 400K."""

from __future__ import annotations

import json

import numpy as np
import pytest

from longctx.config import build_config
from longctx.rope import closed_form_inv_freq, model_inv_freq
from longctx.train.config import TrainConfig
from longctx.train.loop import train


@pytest.mark.slow
def test_smollm2_rope_theta_400k_export(packed_dir, tmp_path):
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    out = tmp_path / "smol"
    cfg = build_config(TrainConfig, cli={
        "data": str(packed_dir), "out": str(out), "model": "smollm2-135m", "steps": 1,
        "seq_len": 64, "rope_theta": 400000.0, "lr": 1e-5,
    })
    manifest = train(cfg)
    assert manifest["rope_parameters"] == {"rope_type": "default", "rope_theta": 400000.0}
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["rope_parameters"]["rope_theta"] == 400000.0
    assert config["max_position_embeddings"] == 8192  # already >= seq_len, kept
    model = AutoModelForCausalLM.from_pretrained(str(out / "final"))
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    expected = 1.0 / 400000.0 ** (np.arange(0, head_dim, 2) / head_dim)
    np.testing.assert_allclose(model_inv_freq(model), expected, rtol=1e-6)
    old, _ = closed_form_inv_freq({"rope_type": "default", "rope_theta": 1e5}, head_dim)
    assert not np.allclose(model_inv_freq(model), old)
    # the step changed the weights (a real update, not a copy of the base model)
    assert np.isfinite(manifest["final_loss"]) and manifest["final_loss"] < 15
    from longctx.models import resolve_model_dir

    base = AutoModelForCausalLM.from_pretrained(str(resolve_model_dir("smollm2-135m")))
    w_new = model.model.layers[0].mlp.up_proj.weight.detach()
    w_old = base.model.layers[0].mlp.up_proj.weight.detach()
    assert not bool((w_new == w_old).all())
    assert float((w_new - w_old).abs().max()) < 1e-3  # lr 1e-5, one Adam step
