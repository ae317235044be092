"""``train --eval-every``: evaluations of the current weights land in metrics.jsonl, leave the
training curve unchanged, survive a resume once each, and the report draws them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longctx.config import ConfigError, build_config
from longctx.train.config import TrainConfig
from longctx.train.loop import train

BASE = dict(model="tiny", seq_len=64, batch_tokens="128", lr=3e-3, seed=1, grad_clip=1.0,
            device="cpu", precision="fp32")
EVAL = dict(eval_every=2, eval_rows=2, eval_needle_lengths=[128], eval_needle_depths=[0, 100],
            eval_key_tokens=True, eval_key_context=16, eval_key_stride=8)


def run(data: Path, out: Path, **kw) -> dict:
    cfg = build_config(TrainConfig, cli={"data": str(data), "out": str(out), **BASE, **kw})
    return train(cfg)


def records(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def with_eval(packed_dir, eval_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_every") / "run"
    run(packed_dir, out, steps=4, eval_data=str(eval_dir), **EVAL)
    return out


def test_evaluations_logged_at_every_kth_step(with_eval, capsys):
    recs = records(with_eval)
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    evals = {r["step"]: r["eval"] for r in recs if "eval" in r}
    assert sorted(evals) == [2, 4]
    for ev in evals.values():
        assert list(ev["loss_by_bucket"]) == ["0-16", "16-32", "32-64"]
        assert all(v is not None and 0 < v < 20 for v in ev["loss_by_bucket"].values())
        assert sum(ev["tokens_by_bucket"].values()) > 0 and ev["rows"] == 2
        assert set(ev["loss_by_domain"]) <= {"Book", "ArXiv"}
        # key tokens: only past K + stride = 24 tokens of context, and a subset of the scored
        assert ev["key_tokens_by_bucket"]["0-16"] == 0
        assert all(ev["key_tokens_by_bucket"][b] <= ev["tokens_by_bucket"][b]
                   for b in ev["tokens_by_bucket"])
        assert set(ev["key_loss_by_bucket"]) == set(ev["loss_by_bucket"])
        needle = ev["needle"]
        assert [(c["length"], c["depth"]) for c in needle["cells"]] == [(128, 0), (128, 100)]
        assert 0.0 <= needle["average"] <= 1.0 and needle["headline"] == "ruler"
        assert ev["eval_s"] > 0
    # the model learns between evaluations: held-out loss falls
    assert evals[4]["loss_by_bucket"]["32-64"] < evals[2]["loss_by_bucket"]["32-64"]


def test_training_curve_identical_without_eval(with_eval, packed_dir, tmp_path):
    out = tmp_path / "plain"
    run(packed_dir, out, steps=4)
    plain = {r["step"]: (r["loss"], r["grad_norm"]) for r in records(out)}
    evald = {r["step"]: (r["loss"], r["grad_norm"]) for r in records(with_eval)}
    assert plain == evald  # bit-identical in fp32 on CPU
    from safetensors.torch import load_file

    a = load_file(str(out / "final" / "model.safetensors"))
    b = load_file(str(with_eval / "final" / "model.safetensors"))
    assert all(bool((a[k] == b[k]).all()) for k in a)


def test_resume_keeps_earlier_evaluations_once(with_eval, packed_dir, eval_dir, tmp_path, capsys):
    out = tmp_path / "resumed"
    run(packed_dir, out, steps=2, eval_data=str(eval_dir), **EVAL)
    first = records(out)
    assert [r["step"] for r in first if "eval" in r] == [2]
    capsys.readouterr()
    run(packed_dir, out, steps=4, eval_data=str(eval_dir), **EVAL)
    printed = capsys.readouterr().out
    assert "resumed" in printed and "eval at step 4:" in printed and "% of training" in printed
    recs = records(out)
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert [r["step"] for r in recs if "eval" in r] == [2, 4]
    assert recs[1]["eval"] == first[1]["eval"]  # the step-2 evaluation kept as written
    ref = {r["step"]: r["eval"]["loss_by_bucket"] for r in records(with_eval) if "eval" in r}
    got = {r["step"]: r["eval"]["loss_by_bucket"] for r in recs if "eval" in r}
    assert got == ref


def test_report_draws_the_evaluations(with_eval, tmp_path):
    from longctx.report.html import write_report

    images = write_report([with_eval], tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert "Evaluation during training" in html and images >= 2
    assert 'alt="held-out loss by position and needle score against training steps' in html
    assert ">key 32-64</th>" in html  # the table has the key-token loss columns


@pytest.mark.parametrize("kw, key", [
    (dict(eval_attention="both"), "eval_attention"),
    (dict(eval_buckets=["9-3"]), "eval_buckets"),
    (dict(eval_needle="haystack"), "eval_needle"),
    (dict(eval_needle_depths=[150]), "eval_needle_depths"),
    (dict(eval_needle_lengths=[32]), "eval_needle_lengths"),  # shorter than the prompt
])
def test_bad_eval_settings_are_one_line_errors(packed_dir, eval_dir, tmp_path, kw, key):
    with pytest.raises(ConfigError, match=rf"'{key}'") as e:
        run(packed_dir, tmp_path / "o", steps=2, eval_data=str(eval_dir), eval_every=1, **kw)
    assert "\n" not in str(e.value)


def test_eval_every_without_heldout_data_is_refused(packed_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"'eval_every'.*no held-out split"):
        run(packed_dir, tmp_path / "o", steps=2, eval_every=1)


@pytest.mark.slow
def test_eval_data_defaults_to_the_builds_heldout_split(tmp_path, capsys):
    from longctx.cli import main

    from .test_with_data_build import write_corpus

    corpus = write_corpus(tmp_path / "corpus.jsonl", n=90)
    data, out = tmp_path / "data", tmp_path / "out"
    for argv in (["data", "build", str(corpus), "--out", str(data), "--seq-len", "128",
                  "--tokens", "2K", "--long-threshold", "64", "--seed", "0",
                  "--eval-tokens", "512"],
                 ["train", "--data", str(data), "--out", str(out), "--model", "tiny",
                  "--steps", "2", "--seq-len", "64", "--eval-every", "2",
                  "--eval-needle-lengths", "", "--eval-buckets", "0-32,32-64"]):
        try:
            main(argv)
        except SystemExit as e:
            assert e.code in (None, 0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["eval_data"] == str(data / "heldout")
    ev = records(out)[-1]["eval"]
    assert list(ev["loss_by_bucket"]) == ["0-32", "32-64"] and "needle" not in ev
    assert "eval at step 2:" in capsys.readouterr().out


@pytest.mark.slow
def test_two_process_fsdp_evaluations_equal_one_process(packed_dir, eval_dir, tmp_path):
    from .test_train_distributed import FLAGS, longctx

    flags = [*FLAGS, "--data", str(packed_dir), "--steps", "2", "--eval-data", str(eval_dir),
             "--eval-every", "2", "--eval-rows", "3"]
    longctx(["train", "--out", str(tmp_path / "one"), *flags])
    res = longctx(["train", "--out", str(tmp_path / "two"), *flags], nproc=2)
    assert res.stdout.count("needle grid is skipped with 2 processes") == 1  # rank 0 only
    one, two = records(tmp_path / "one")[-1]["eval"], records(tmp_path / "two")[-1]["eval"]
    assert one["tokens_by_bucket"] == two["tokens_by_bucket"]
    for b, v in one["loss_by_bucket"].items():
        assert abs(v - two["loss_by_bucket"][b]) < 1e-4


def test_report_reads_malformed_evaluations_as_gaps():
    from longctx.plotting import eval_during_training_figure, png_bytes
    from longctx.report.collect import eval_records

    metrics = [{"step": 1, "loss": 1.0},
               {"step": 2, "tokens": 256, "eval": {"loss_by_bucket": {"0-16": "x", "16-32": 2.5},
                                                    "needle": 5, "eval_s": None}},
               {"step": 3, "eval": ["not", "a", "dict"]},
               {"step": 4, "tokens": 512, "eval": {"loss_by_bucket": {"0-16": float("nan")},
                                                    "key_loss_by_bucket": {"0-16": 3.0},
                                                    "needle": {"average": 0.5}}}]
    evals = eval_records(metrics)
    assert [e["step"] for e in evals] == [2, 4]
    assert evals[0]["loss_by_bucket"] == {"16-32": 2.5} and evals[0]["needle"] is None
    assert evals[0]["key_loss_by_bucket"] is None and evals[1]["key_loss_by_bucket"] == {"0-16": 3.0}
    assert evals[1]["loss_by_bucket"] == {} and evals[1]["needle"] == 0.5
    assert png_bytes(eval_during_training_figure(evals)).startswith(b"\x89PNG")
