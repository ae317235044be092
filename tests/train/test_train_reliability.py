"""Hostile and unlucky inputs to `longctx train`: each ends in a one-line error (exit 2 from the
CLI) or a correct result; none runs code from a file, none ends `done` with wrong content.

- pickle payloads planted in a checkpoint are never loaded (nothing in a checkpoint unpickles)
- a rebuilt dataset in the same folder is not "resumed" onto; --force starts over
- a diverging loss stops with a checkpoint of the last finite state and status "failed"
- non-finite or absurd config values, wrong folder kinds, torn manifests, --out overlapping
  an input, a foreign or locked --out: one line, nothing written
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from longctx.config import ConfigError, build_config
from longctx.errors import LongctxError
from longctx.train.config import TrainConfig
from longctx.train.loop import TrainError, train

from .train_fixtures import write_packed

REPO = Path(__file__).resolve().parents[2]
BASE = dict(model="tiny", seq_len=64, batch_tokens="128", lr=3e-3, seed=1)


def make(data: Path, out: Path, **kw) -> TrainConfig:
    return build_config(TrainConfig, cli={"data": str(data), "out": str(out), **BASE, **kw})


def run(data: Path, out: Path, **kw) -> dict:
    return train(make(data, out, **kw))


def metrics(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


def payload(marker: Path) -> bytes:
    """A pickle that writes ``marker`` when unpickled (what a hostile checkpoint would hold)."""

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    return pickle.dumps(Evil())


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg and "\n" not in msg, msg
    return msg


def test_payload_is_live(tmp_path):
    """The planted payload really runs code when unpickled (so the tests below can fail)."""
    probe = tmp_path / "probe"
    pickle.loads(payload(probe))
    assert probe.read_text() == "ran"


# ------------------------------------------------------------------------ pickle payloads
@pytest.fixture(scope="module")
def one_step(packed_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "run"
    run(packed_dir, out, steps=1)
    return out


def _plant(ckpt: Path, how: str, marker: Path) -> None:
    evil = payload(marker)
    if how == "old_format":  # an older longctx checkpoint: DCP weights/ + torch.save'd RNG
        for f in ckpt.iterdir():
            if f.name != "trainer.json":
                f.unlink()
        (ckpt / "weights").mkdir()
        (ckpt / "weights" / ".metadata").write_bytes(evil)
        (ckpt / "weights" / "__0_0.distcp").write_bytes(evil)
        (ckpt / "rng_rank0.pt").write_bytes(evil)
    elif how in ("rank00000.safetensors", "index.json", "trainer.json", "rank00000.json"):
        (ckpt / how).write_bytes(evil)  # a valid name, pickle bytes inside
    else:
        (ckpt / how).write_bytes(evil)  # an extra pickle file beside a valid checkpoint


@pytest.mark.parametrize("how,pattern", [
    ("rng_rank0.pt", "never unpickles"),
    (".metadata", "never unpickles"),
    ("optim.pth", "never unpickles"),
    ("old_format", "never unpickles"),
    ("rank00000.safetensors", "unreadable"),
    ("index.json", "unreadable"),
    ("trainer.json", "unreadable"),
    ("rank00000.json", "unreadable"),
])
def test_planted_pickle_is_never_loaded(one_step, packed_dir, tmp_path, how, pattern):
    out = tmp_path / "run"
    shutil.copytree(one_step, out)
    ckpt = out / "checkpoints" / "step_00000001"
    marker = tmp_path / "pwned"
    _plant(ckpt, how, marker)
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(LongctxError) as e:
        run(packed_dir, out, steps=2)
    assert pattern in one_line(e.value)
    assert not marker.exists()
    assert (out / "metrics.jsonl").read_text() == before  # nothing trained, nothing rewritten

    # --force discards the unreadable checkpoint and trains from scratch, still running nothing
    manifest = run(packed_dir, out, steps=2, force=True)
    assert manifest["status"] == "done" and manifest["steps"] == 2
    assert [r["step"] for r in metrics(out)] == [1, 2]
    assert not marker.exists() and not ckpt.exists()


@pytest.mark.slow
def test_planted_pickle_via_cli_with_stdin(one_step, packed_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(one_step, out)
    marker = tmp_path / "pwned"
    (out / "checkpoints" / "step_00000001" / "rng_rank0.pt").write_bytes(payload(marker))
    res = subprocess.run(
        [sys.executable, "-m", "longctx", "train", "--data", str(packed_dir), "--out", str(out),
         "--steps", "2", "--seq-len", "64", "--batch-tokens", "128", "--lr", "3e-3",
         "--seed", "1"],
        input="y\n", capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "rng_rank0.pt" in lines[0]
    assert not marker.exists()


def test_checkpoint_is_safetensors_and_json_only(one_step):
    from safetensors import safe_open

    ckpt = one_step / "checkpoints" / "step_00000001"
    assert {f.name for f in ckpt.iterdir()} == {
        "index.json", "trainer.json", "rank00000.json", "rank00000.safetensors"}
    index = json.loads((ckpt / "index.json").read_text())
    assert index["world_size"] == 1 and index["step"] == 1
    meta = json.loads((ckpt / "rank00000.json").read_text())
    with safe_open(str(ckpt / "rank00000.safetensors"), "pt") as f:
        keys = set(f.keys())
        for name, info in meta["tensors"].items():
            src = meta["aliases"].get(name, name)
            assert list(f.get_slice(src).get_shape()) == info["shape"]
    assert "rng/torch" in keys
    assert any(k.startswith("model/") for k in keys) and any(k.endswith("/exp_avg") for k in keys)
    # the tied embedding / head pair is stored once
    assert any(k.endswith("lm_head.weight") for k in meta["aliases"])


# ------------------------------------------------------------------------ content identity
def _build(folder: Path, seed: int) -> Path:
    """A packed folder whose manifest carries the same config hash for every seed (the same
    `data build` arguments rerun on edited inputs)."""
    write_packed(folder, rows=8, seq_len=128, seed=seed)
    m = json.loads((folder / "manifest.json").read_text())
    m["config_hash"] = "same-build-arguments"
    (folder / "manifest.json").write_text(json.dumps(m))
    return folder


def test_rebuilt_data_is_refused_then_force_starts_over(tmp_path, capsys):
    from longctx.stage import path_identity

    data, out = _build(tmp_path / "d", seed=0), tmp_path / "t"
    run(data, out, steps=3)
    old_identity = path_identity(data)
    before = (out / "metrics.jsonl").read_text()
    done = json.loads((out / "manifest.json").read_text())

    _build(data, seed=5)  # rebuilt in place from edited inputs
    assert path_identity(data) != old_identity
    capsys.readouterr()
    for steps in (3, 6):  # the same command, or more steps: never "resumed" onto other data
        with pytest.raises(TrainError) as e:
            run(data, out, steps=steps)
        msg = one_line(e.value)
        assert f"the data in {data} changed" in msg and "--force" in msg
    printed = capsys.readouterr().out
    assert "skipping" not in printed and "resumed" not in printed
    assert (out / "metrics.jsonl").read_text() == before
    assert json.loads((out / "manifest.json").read_text()) == done

    manifest = run(data, out, steps=3, force=True)
    assert manifest["status"] == "done" and manifest["steps"] == 3
    assert manifest["config_hash"] != done["config_hash"]
    assert manifest["resume_key"]["data_identity"] == path_identity(data)
    trainer = json.loads((out / "checkpoints" / "step_00000003" / "trainer.json").read_text())
    assert trainer["resume_key"]["data_identity"] == path_identity(data)
    recs = metrics(out)
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert recs[0]["loss"] != json.loads(before.splitlines()[0])["loss"]  # new data, new run
    assert "force" not in manifest["resume_key"]
    # and the forced run is now the run: the same command without --force skips
    assert run(data, out, steps=3)["config_hash"] == manifest["config_hash"]


def test_moved_data_resumes(tmp_path, capsys):
    data, out = _build(tmp_path / "d", seed=0), tmp_path / "t"
    run(data, out, steps=2)
    moved = tmp_path / "elsewhere"
    shutil.move(str(data), str(moved))
    capsys.readouterr()
    manifest = run(moved, out, steps=3)
    assert "resumed from" in capsys.readouterr().out
    assert manifest["steps"] == 3 and [r["step"] for r in metrics(out)] == [1, 2, 3]


def test_torn_metrics_line_is_dropped_on_resume(packed_dir, tmp_path):
    out = tmp_path / "t"
    run(packed_dir, out, steps=2)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 1.2')  # killed mid-write
    manifest = run(packed_dir, out, steps=3)
    assert manifest["status"] == "done"
    assert [r["step"] for r in metrics(out)] == [1, 2, 3]


# ------------------------------------------------------------------------ divergence
def _poison_from(monkeypatch, forward: int) -> None:
    """Make every forward pass from the ``forward``-th on return a NaN loss."""
    from longctx.train import loop

    real = loop.CausalLMWithLoss
    calls = {"n": 0}

    def poisoned(lm, ce_chunk, ce_impl="chunked"):
        wrapper = real(lm, ce_chunk, ce_impl)

        def hook(module, args, output):
            calls["n"] += 1
            if calls["n"] >= forward:
                return (output[0] * float("nan"), output[1])
            return None

        wrapper.register_forward_hook(hook)
        return wrapper

    monkeypatch.setattr(loop, "CausalLMWithLoss", poisoned)


def test_nan_loss_stops_failed_with_last_finite_checkpoint(packed_dir, tmp_path, monkeypatch,
                                                           capsys):
    from longctx.cli import main

    ref = tmp_path / "ref"
    run(packed_dir, ref, steps=4)
    reference = {r["step"]: r["loss"] for r in metrics(ref)}
    capsys.readouterr()

    out = tmp_path / "t"
    _poison_from(monkeypatch, forward=5)  # 2 forwards per step: step 3 diverges
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(packed_dir), "--out", str(out), "--steps", "4",
              "--seq-len", "64", "--batch-tokens", "128", "--lr", "3e-3", "--seed", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverged" in err[0] and "step 3" in err[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "non-finite loss" in manifest["reason"]
    assert manifest["steps"] == 2 and manifest["export"] is None
    text = (out / "metrics.jsonl").read_text()
    assert [r["step"] for r in metrics(out)] == [1, 2] and "NaN" not in text
    assert (out / "checkpoints" / "latest").read_text() == "step_00000002"
    assert not (out / "final").exists()

    # the checkpoint is the finite state after step 2: resuming (data fixed) continues exactly
    monkeypatch.undo()
    manifest = run(packed_dir, out, steps=4)
    assert manifest["status"] == "done" and "reason" not in manifest
    got = {r["step"]: r["loss"] for r in metrics(out)}
    assert sorted(got) == [1, 2, 3, 4]
    for step in (3, 4):
        assert abs(got[step] - reference[step]) / reference[step] < 1e-4


def test_nan_from_first_step_never_exports(packed_dir, tmp_path, monkeypatch):
    out = tmp_path / "t"
    _poison_from(monkeypatch, forward=1)
    with pytest.raises(TrainError, match=r"diverged.*step 1"):
        run(packed_dir, out, steps=3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["steps"] == 0
    assert not (out / "final").exists()
    assert not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().strip()
    assert (out / "checkpoints" / "latest").read_text() == "step_00000000"  # the initial weights


# ------------------------------------------------------------------------ config values
@pytest.mark.parametrize("kw,pattern", [
    ({"lr": math.inf}, r"'lr'.*finite.*inf"),
    ({"lr": math.nan}, r"'lr'.*nan"),
    ({"lr": 5.0}, r"'lr'.*at most 1.*5\.0"),
    ({"beta1": 1.0}, r"'beta1'.*\[0, 1\).*1\.0"),
    ({"beta2": -0.5}, r"'beta2'.*-0\.5"),
    ({"weight_decay": math.nan}, r"'weight_decay'.*nan"),
    ({"grad_clip": math.inf}, r"'grad_clip'.*inf"),
    ({"rope_theta": math.inf}, r"'rope_theta'.*inf"),
    ({"rope_type": "linear", "rope_factor": math.nan}, r"'rope_factor'.*nan"),
    ({"min_lr_ratio": math.nan}, r"'min_lr_ratio'.*nan"),
    ({"gpu_memory_gb": math.inf}, r"'gpu_memory_gb'.*inf"),
    ({"rope_low_freq_factor": -1.0}, r"'rope_low_freq_factor'"),
    ({"seq_len": 3_000_000_000}, r"'seq_len'.*3000000000"),
    ({"batch_tokens": "100T"}, r"'batch_tokens'.*rows per step"),
    ({"tiny_hidden": 10**9}, r"'tiny_hidden'.*at most"),
])
def test_absurd_values_are_one_line(packed_dir, tmp_path, kw, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        make(packed_dir, tmp_path / "o", steps=1, **kw)
    one_line(e.value)
    assert not (tmp_path / "o").exists()


def test_infinite_lr_from_cli_and_set(packed_dir, tmp_path, capsys):
    from longctx.cli import main

    out = tmp_path / "o"
    for extra in (["--lr", "1e999"], ["--set", "lr=.nan"]):
        with pytest.raises(SystemExit) as e:
            main(["train", "--data", str(packed_dir), "--out", str(out), "--steps", "1", *extra])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "'lr'" in err[0] and "finite" in err[0]
    assert not out.exists()


# ------------------------------------------------------------------------ folders
def _manifest_folder(folder: Path, content: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(content)
    return folder


@pytest.mark.parametrize("content,pattern", [
    (json.dumps({"stage": "data.stats", "status": "done", "domains": {}}),
     r"is not a packed data build \(its manifest.json says stage 'data.stats'\)"),
    (json.dumps({"stage": "train", "status": "done", "steps": 3}),
     r"is not a packed data build .*stage 'train'"),
    ('{"stage": "data.build", "status": "do', r"manifest.json is torn or not a JSON object"),
    ("[1, 2, 3]", r"manifest.json is torn or not a JSON object"),
    (json.dumps({"stage": "data.build", "status": "done", "seq_len": "128", "shards": []}),
     r"no valid seq_len"),
])
def test_wrong_data_folder_is_one_line(tmp_path, content, pattern):
    data = _manifest_folder(tmp_path / "notdata", content)
    with pytest.raises(ConfigError, match=pattern) as e:
        make(data, tmp_path / "o", steps=1)
    assert str(data) in one_line(e.value)
    assert not (tmp_path / "o").exists()


def test_data_folder_that_is_a_train_run(one_step, tmp_path):
    with pytest.raises(ConfigError, match=r"'data'.*not a packed data build.*'train'"):
        make(one_step, tmp_path / "o", steps=1)


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_out_overlapping_data_is_refused_before_writing(tmp_path, where, capsys):
    from longctx.cli import main

    parent = tmp_path / "parent"
    data = write_packed(parent / "d", rows=4, seq_len=128)
    out = {"same": data, "inside": data / "run", "around": parent}[where]
    before = {p: p.read_bytes() for p in data.iterdir()}
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(data), "--out", str(out), "--steps", "1", "--seq-len", "64"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "overlaps the data folder" in err[0]
    assert {p: p.read_bytes() for p in data.iterdir()} == before  # nothing written or removed
    assert sorted(p.name for p in parent.iterdir()) == ["d"]


def test_foreign_out_folder_is_left_alone(packed_dir, tmp_path):
    out = tmp_path / "mine"
    (out / "final").mkdir(parents=True)
    (out / "final" / "weights.txt").write_text("the user's own model")
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(TrainError, match="did not write") as e:
        run(packed_dir, out, steps=1)
    one_line(e.value)
    assert (out / "final" / "weights.txt").read_text() == "the user's own model"
    assert sorted(p.name for p in out.iterdir() if p.name != ".longctx.lock") == ["final",
                                                                                  "notes.txt"]


def test_out_holding_another_stage_is_refused(packed_dir, tmp_path):
    out = _manifest_folder(tmp_path / "stats", json.dumps({"stage": "data.stats"}))
    with pytest.raises(TrainError, match=r"holds a 'data.stats' output"):
        run(packed_dir, out, steps=1)
    assert json.loads((out / "manifest.json").read_text()) == {"stage": "data.stats"}


def test_second_run_into_a_locked_out_fails_naming_the_holder(packed_dir, tmp_path):
    from longctx.stage import stage_output

    out = tmp_path / "busy"
    with stage_output(out, "train"):
        with pytest.raises(TrainError, match=rf"in use by another longctx run \(pid {os.getpid()}"):
            run(packed_dir, out, steps=1)
    assert not (out / "manifest.json").exists()
    assert run(packed_dir, out, steps=1)["status"] == "done"  # released: the next run goes
