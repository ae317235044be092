"""Bad configs fail fast (before any model is loaded) with the key and the value named."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longctx.cli import app
from longctx.config import ConfigError, build_config
from longctx.train.config import TrainConfig

from .train_fixtures import write_packed


def make(data: Path, tmp_path: Path, **kw) -> TrainConfig:
    cli = {"data": str(data), "out": str(tmp_path / "o"), "steps": 1, "seq_len": 64, **kw}
    return build_config(TrainConfig, cli=cli)


@pytest.mark.parametrize(
    "kw,pattern",
    [
        ({"lr": 0.0}, r"'lr'.*positive.*0\.0"),
        ({"lr": -1e-5}, r"'lr'.*-1e-05"),
        ({"seq_len": 48}, r"'seq_len'.*48.*128"),
        ({"seq_len": 256}, r"'seq_len'.*256.*128"),
        ({"rope_type": "ntk"}, r"'rope_type'.*'ntk'"),
        ({"rope_type": "yarn", "rope_factor": 4.0}, r"'rope_original_max_positions'.*yarn"),
        ({"rope_type": "linear"}, r"'rope_factor'.*linear"),
        ({"doc_mask": "yes"}, r"'doc_mask'.*'yes'"),
        ({"batch_tokens": "100"}, r"'batch_tokens'.*100.*64"),
        ({"rope_theta": -5.0}, r"'rope_theta'.*-5"),
    ],
)
def test_bad_values(packed_dir, tmp_path, kw, pattern):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=pattern):
        make(packed_dir, tmp_path, **kw)
    assert time.perf_counter() - t0 < 5


def test_unknown_key_and_missing_dir(packed_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rate'"):
        build_config(TrainConfig, cli={"data": str(packed_dir), "out": "x", "steps": 1},
                     overrides=["learning_rate=1e-4"])
    with pytest.raises(ConfigError, match=r"'data'.*nope"):
        make(tmp_path / "nope", tmp_path)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lr: 1e-4\nbogus: 3\n")
    with pytest.raises(ConfigError, match="bogus"):
        build_config(TrainConfig, config_file=cfg_file, cli={"data": str(packed_dir)})


def test_eval_data_checked(packed_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"'eval_data'.*nowhere"):
        make(packed_dir, tmp_path, eval_data=str(tmp_path / "nowhere"))
    odd = write_packed(tmp_path / "odd", rows=2, seq_len=96, shards=1)
    with pytest.raises(ConfigError, match=r"'eval_data'.*96.*seq_len 64"):
        make(packed_dir, tmp_path, eval_data=str(odd))


def test_tokenizer_mismatch_is_refused_before_loading(packed_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(packed_dir, other)
    m = json.loads((other / "manifest.json").read_text())
    m["tokenizer"]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(m))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"'model'='smollm2-135m'.*tokenizer mismatch.*000000"):
        make(other, tmp_path, model="smollm2-135m")
    assert time.perf_counter() - t0 < 5


def test_yaml_then_flags_then_set(packed_dir, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(f"data: {packed_dir}\nout: {tmp_path}/o\nsteps: 2\nlr: 1.0e-4\nrope_theta: 5.0e5\n")
    cfg = build_config(TrainConfig, config_file=f, cli={"lr": 2e-4}, overrides=["steps=7"])
    assert (cfg.lr, cfg.steps, cfg.rope_theta, cfg.resolved_seq_len()) == (2e-4, 7, 5e5, 128)


def test_cli_errors_name_key_and_exit_2(packed_dir, tmp_path):
    from longctx.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(packed_dir), "--out", str(tmp_path / "o"), "--steps", "1",
              "--lr", "-1"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(packed_dir), "--out", str(tmp_path / "o"), "--steps", "1",
              "--set", "warmup=3"])
    assert e.value.code == 2


def test_help_lists_every_config_key():
    import dataclasses

    res = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in res.output, f.name
    assert "--config" in res.output and "--set" in res.output


def test_preflight_refuses_with_numbers(packed_dir, tmp_path):
    from longctx.train.loop import train
    from longctx.train.memory import MemoryPreflightError

    cfg = make(packed_dir, tmp_path, gpu_memory_gb=0.5)
    with pytest.raises(MemoryPreflightError, match=r"needs about \d+\.\d GiB.*0\.5 GiB.*model states"):
        train(cfg)


def test_preflight_uses_the_fast_path_keys(packed_dir, tmp_path):
    """train's preflight estimate is the planner's for the same keys (policy, CE impl)."""
    import json

    from longctx.train.loop import train
    from longctx.train.memory import estimate
    from longctx.train.model import build_model, count_parameters

    cfg = make(packed_dir, tmp_path, checkpoint_policy="selective", ce_impl="fused",
               ce_chunk=16)
    train(cfg)
    recorded = json.loads((tmp_path / "o" / "manifest.json").read_text())["memory_estimate_bytes"]
    model, _, _ = build_model(cfg)
    kw = dict(params=count_parameters(model), seq_len=64, micro_batch=1, world=1, fsdp=False,
              cpu_offload=False, checkpointing=True, ce_chunk=16)
    want = estimate(model.config, **kw, checkpoint_policy="selective", ce_impl="fused")
    assert recorded == pytest.approx(want.as_dict())
    assert recorded != pytest.approx(estimate(model.config, **kw).as_dict())


def test_memory_estimate_by_hand():
    from types import SimpleNamespace

    from longctx.train.memory import OVERHEAD, GiB, calibration, estimate

    c = SimpleNamespace(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=32, vocab_size=32000)
    n = 6_738_415_616  # LLaMA-2 7B
    e = estimate(c, params=n, seq_len=81920, micro_batch=1, world=8, fsdp=True,
                 cpu_offload=False, checkpointing=True, ce_chunk=4096)
    assert e.model_states == 16 * n / 8  # 13.5 GB of fp32 weights/grads/Adam per GPU
    # bytes per token: each layer's checkpointed input (2 x H, bf16 under FSDP), one layer's
    # full activations during its recompute, the final hidden state and its gradient
    per_layer = 16 * 4096 + 6 * 4096 + 4 * 4096 + 8 * 11008
    factor = calibration()["fit"]["activation_factor"]
    assert e.activations == pytest.approx(
        factor * 81920 * (32 * 2 * 4096 + per_layer + 2 * 2 * 4096))
    assert e.logits == 4096 * 32000 * 12 and e.overhead == OVERHEAD
    assert 40 * GiB < e.total < 80 * GiB  # the paper's 8x A100-80G setup fits
    single = estimate(c, params=n, seq_len=81920, micro_batch=1, world=1, fsdp=False,
                      cpu_offload=False, checkpointing=True, ce_chunk=4096)
    assert single.total > 100 * GiB  # one GPU without sharding cannot hold 7B + Adam
