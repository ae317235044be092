"""The one model builder: folders and configs, RoPE before construction, eval's override."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from longctx.eval.generate import EvalError, load_eval_model
from longctx.models import load_causal_lm
from longctx.rope import closed_form_inv_freq, model_inv_freq

HEAD_DIM = 16
BASE_ROPES = {
    "default": {"rope_type": "default", "rope_theta": 10_000.0},
    "yarn": {"rope_type": "yarn", "rope_theta": 10_000.0, "factor": 4.0,
             "original_max_position_embeddings": 32, "beta_fast": 16.0},
    "llama3": {"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0,
               "original_max_position_embeddings": 32, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0},
}


def tiny_llama(rope: dict | None = None, max_pos: int = 128) -> LlamaConfig:
    return LlamaConfig(vocab_size=64, hidden_size=HEAD_DIM * 2, intermediate_size=32,
                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                       max_position_embeddings=max_pos, use_cache=False,
                       rope_parameters=dict(rope or BASE_ROPES["default"]))


def saved_folder(tmp_path, rope: dict):
    folder = tmp_path / "model"
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama(rope)).save_pretrained(str(folder))
    return folder


def old_eval_rope(saved: dict, theta: float | None) -> dict:
    """What eval's removed ``set_rope_theta`` produced: the model's dict, base replaced."""
    return dict(saved) if theta is None else {**saved, "rope_theta": float(theta)}


@pytest.mark.parametrize("kind", sorted(BASE_ROPES))
@pytest.mark.parametrize("theta", [None, 400_000.0])
def test_eval_override_gives_the_old_rope_parameters(tmp_path, kind, theta):
    folder = saved_folder(tmp_path, BASE_ROPES[kind])
    saved = json.loads((folder / "config.json").read_text())["rope_parameters"]
    model, got_folder = load_eval_model(str(folder), rope_theta=theta, max_length=4096,
                                        dtype="fp32", device="cpu")
    assert got_folder == folder
    assert model.config.rope_parameters == old_eval_rope(saved, theta)
    assert model.config.max_position_embeddings == 4096  # raised to the eval length
    assert not model.training and next(model.parameters()).dtype == torch.float32
    if kind == "default":
        want, _ = closed_form_inv_freq(model.config.rope_parameters, HEAD_DIM)
        np.testing.assert_allclose(model_inv_freq(model), want, rtol=2e-6)


def test_eval_override_on_the_embedded_model():
    model, _ = load_eval_model("smollm2-135m", rope_theta=400_000.0, max_length=256,
                               dtype="auto", device="cpu")
    assert model.config.rope_parameters == {"rope_type": "default", "rope_theta": 400_000.0}
    assert model.config.max_position_embeddings == 8192  # already above 256: kept
    assert next(model.parameters()).dtype == torch.float32  # auto on CPU


def test_eval_bad_dtype_is_an_eval_error(tmp_path):
    folder = saved_folder(tmp_path, BASE_ROPES["default"])
    with pytest.raises(EvalError, match=r"dtype 'int8': expected one of auto, fp32, bf16, fp16"):
        load_eval_model(str(folder), rope_theta=None, max_length=64, dtype="int8", device="cpu")


def test_from_config_is_seeded_random_init():
    a, folder, params = load_causal_lm(tiny_llama(), seed=3)
    b, _, _ = load_causal_lm(tiny_llama(), seed=3)
    c, _, _ = load_causal_lm(tiny_llama(), seed=4)
    assert folder is None and params == BASE_ROPES["default"]
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.config.use_cache is False


def test_folder_with_a_training_rope_is_applied_before_construction(tmp_path):
    folder = saved_folder(tmp_path, BASE_ROPES["default"])
    rope = {"rope_type": "linear", "theta": 50_000.0, "factor": 4.0}
    model, got, params = load_causal_lm(folder, rope=rope, min_positions=512,
                                        dtype=torch.bfloat16)
    assert got == folder
    assert params == {"rope_type": "linear", "rope_theta": 50_000.0, "factor": 4.0}
    assert model.config.rope_parameters == params and model.config.max_position_embeddings == 512
    assert next(model.parameters()).dtype == torch.bfloat16
    want, _ = closed_form_inv_freq(params, HEAD_DIM)
    np.testing.assert_allclose(model_inv_freq(model), want, rtol=2e-6)
    # the weights are the folder's, not a fresh init
    ref = LlamaForCausalLM.from_pretrained(str(folder))
    assert torch.equal(model.model.embed_tokens.weight.float(),
                       ref.model.embed_tokens.weight.to(torch.bfloat16).float())


def test_dynamic_keeps_max_positions_as_the_original_length():
    config = tiny_llama(max_pos=64)
    _, _, params = load_causal_lm(config, rope={"rope_type": "dynamic", "factor": 4.0},
                                  min_positions=1024)
    assert params["rope_type"] == "dynamic" and config.max_position_embeddings == 64
