"""SIGTERM mid-run: the step in flight finishes, a checkpoint is written, rerun resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sigterm_checkpoints_and_rerun_resumes(packed_dir, tmp_path):
    out = tmp_path / "sig"
    args = [sys.executable, "-m", "longctx.train", "--data", str(packed_dir), "--out", str(out),
            "--seq-len", "64", "--lr", "1e-3", "--no-checkpointing"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*args, "--steps", "400"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.time() + 120
    metrics = out / "metrics.jsonl"
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "stopped by signal" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    stopped_at = manifest["steps"]
    assert manifest["status"] == "interrupted" and 2 <= stopped_at < 400
    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step_{stopped_at:08d}"
    trainer = json.loads((out / "checkpoints" / latest / "trainer.json").read_text())
    assert trainer["sampler"]["step"] == stopped_at
    ckpt_files = {f.name for f in (out / "checkpoints" / latest).iterdir()}
    assert ckpt_files == {"index.json", "trainer.json", "rank00000.json", "rank00000.safetensors"}

    res = subprocess.run([*args, "--steps", str(stopped_at + 1)], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from" in res.stdout and f"at step {stopped_at}" in res.stdout
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert steps == list(range(1, stopped_at + 2))
    assert json.loads((out / "manifest.json").read_text())["status"] == "done"
