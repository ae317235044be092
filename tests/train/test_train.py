"""End-to-end CPU training of the tiny model: falling loss, exact resume, HF export, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from longctx.config import build_config
from longctx.train.config import TrainConfig
from longctx.train.loop import train

BASE = dict(model="tiny", seq_len=64, batch_tokens="128", lr=3e-3, seed=1, grad_clip=1.0)


def run(data: Path, out: Path, **kw) -> dict:
    cfg = build_config(TrainConfig, cli={"data": str(data), "out": str(out), **BASE, **kw})
    return train(cfg)


def losses(out: Path) -> dict[int, float]:
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs}


@pytest.fixture(scope="module")
def full_run(packed_dir, eval_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "full"
    manifest = run(packed_dir, out, steps=6, eval_data=str(eval_dir), eval_every=3)
    return out, manifest


def test_loss_falls_and_metrics_are_complete(full_run):
    out, manifest = full_run
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]
    for r in recs:
        assert {"step", "loss", "lr", "tokens", "tokens_per_s"} <= set(r)
        assert r["tokens"] == r["step"] * 128 and r["tokens_per_s"] > 0 and r["lr"] == 3e-3
    first, last = recs[0]["loss"], recs[-1]["loss"]
    # a random init scores about ln(vocab); 6 steps on motif data must move well below it
    assert abs(first - np.log(49152)) < 0.5
    assert last < first - 0.3
    assert "eval_loss" in recs[2] and "eval_loss" in recs[5]
    assert recs[5]["eval_loss"] < recs[2]["eval_loss"]
    assert manifest["stage"] == "train" and manifest["status"] == "done"
    assert manifest["steps"] == 6 and manifest["tokens"] == 768
    assert manifest["rope_parameters"]["rope_theta"] == 10_000.0
    assert manifest["config"]["model"] == "tiny"
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["config_hash"] == manifest["config_hash"]


def test_stop_at_3_and_resume_matches_uninterrupted(full_run, packed_dir, eval_dir, tmp_path):
    ref = losses(full_run[0])
    out = tmp_path / "resumed"
    run(packed_dir, out, steps=3, eval_data=str(eval_dir), eval_every=3)
    assert sorted(losses(out)) == [1, 2, 3]
    manifest = run(packed_dir, out, steps=6, eval_data=str(eval_dir), eval_every=3)
    got = losses(out)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]  # resumed run appends, no duplicates
    for step in (4, 5, 6):
        assert abs(got[step] - ref[step]) / abs(ref[step]) < 1e-4, (step, got[step], ref[step])
    assert manifest["steps"] == 6
    trainer = json.loads((out / "checkpoints" / "step_00000006" / "trainer.json").read_text())
    assert trainer["sampler"] == {"seed": 1, "epoch": 0, "step": 6, "num_rows": 32,
                                  "rows_per_step": 2}


def test_rerun_when_done_is_skipped(full_run, packed_dir, eval_dir):
    out, manifest = full_run
    before = (out / "metrics.jsonl").read_text()
    again = run(packed_dir, out, steps=6, eval_data=str(eval_dir), eval_every=3)
    assert again["config_hash"] == manifest["config_hash"]
    assert (out / "metrics.jsonl").read_text() == before


def test_export_loads_with_plain_transformers(full_run, packed_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longctx.data.tokenizer import load_tokenizer
    from longctx.train.loader import TrainRows

    final = full_run[0] / "final"
    assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["rope_parameters"] == {"rope_type": "default", "rope_theta": 10000.0}
    assert cfg["max_position_embeddings"] >= 64
    model = AutoModelForCausalLM.from_pretrained(str(final)).eval()
    tok = AutoTokenizer.from_pretrained(str(final))
    assert load_tokenizer(final).fingerprint == load_tokenizer(None).fingerprint
    assert tok.vocab_size > 0
    # the exported weights are the trained ones: the reloaded model reproduces a low loss
    ids, _, targets = TrainRows(packed_dir, 64).example(0)
    with torch.no_grad():
        logits = model(torch.tensor(ids)[None], use_cache=False).logits[0]
    t = torch.tensor(targets)
    loss = torch.nn.functional.cross_entropy(logits[t != -100], t[t != -100]).item()
    assert loss < losses(full_run[0])[1] - 0.3


def test_bfloat16_export(packed_dir, tmp_path):
    from safetensors import safe_open

    run(packed_dir, tmp_path / "bf", steps=1, export_dtype="bfloat16")
    cfg = json.loads((tmp_path / "bf" / "final" / "config.json").read_text())
    assert cfg["dtype"] == "bfloat16"
    with safe_open(str(tmp_path / "bf" / "final" / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}


def test_resume_with_other_settings_is_refused(full_run, packed_dir, tmp_path):
    from longctx.train.loop import TrainError

    out = tmp_path / "other"
    run(packed_dir, out, steps=1)
    with pytest.raises(TrainError, match="seed"):
        run(packed_dir, out, steps=2, seed=5)
