"""The sharded path: 2 processes (torchrun, gloo, FSDP2) reproduce the 1-process run.

The global batch is independent of the world size, so losses match to float rounding; the
run resumes its own checkpoint (one safetensors file of local shards per rank), refuses to
resume it with another world size (one line), and exports a plain HF folder from the
gathered FSDP state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
FLAGS = ["--seq-len", "64", "--batch-tokens", "256", "--lr", "3e-3", "--device", "cpu",
         "--seed", "2"]


def longctx(args: list[str], nproc: int = 1, rc: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "longctx", *args]
    else:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
        cmd = [torchrun or "torchrun", "--nproc-per-node", str(nproc), "--master-port", "29517",
               "-m", "longctx", *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == rc, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def losses(out: Path) -> dict[int, float]:
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs}


@pytest.mark.slow
def test_two_process_fsdp_matches_single_process(packed_dir, eval_dir, tmp_path):
    ref, mixed = tmp_path / "ref", tmp_path / "mixed"
    # 3 held-out rows over 2 ranks: uneven shares must not hang FSDP's collectives
    flags = [*FLAGS, "--eval-data", str(eval_dir), "--eval-rows", "3", "--eval-every", "3"]
    longctx(["train", "--data", str(packed_dir), "--out", str(ref), "--steps", "3", *flags])
    longctx(["train", "--data", str(packed_dir), "--out", str(mixed), "--steps", "2", *flags],
            nproc=2)
    res = longctx(["train", "--data", str(packed_dir), "--out", str(mixed), "--steps", "3",
                   *flags], nproc=2)
    assert "resumed" in res.stdout and "at step 2" in res.stdout and "x 2 ranks" in res.stdout
    a, b = losses(ref), losses(mixed)
    assert sorted(b) == [1, 2, 3]
    assert abs(a[3] - b[3]) / a[3] < 1e-4
    manifest = json.loads((mixed / "manifest.json").read_text())
    ref_manifest = json.loads((ref / "manifest.json").read_text())
    assert abs(manifest["final_eval_loss"] - ref_manifest["final_eval_loss"]) < 1e-4
    assert manifest["world_size"] == 2 and manifest["status"] == "done"
    ckpt = mixed / "checkpoints" / "step_00000003"
    assert {f.name for f in ckpt.iterdir()} == {
        "index.json", "trainer.json", "rank00000.json", "rank00000.safetensors",
        "rank00001.json", "rank00001.safetensors"}
    index = json.loads((ckpt / "index.json").read_text())
    assert index["world_size"] == 2 and index["step"] == 3

    # another world size: one line, exit 2, nothing trained or rewritten
    before = (mixed / "metrics.jsonl").read_text()
    res = longctx(["train", "--data", str(packed_dir), "--out", str(mixed), "--steps", "4",
                   *flags], rc=2)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "written by 2 processes" in lines[0] and "has 1" in lines[0]
    assert "Traceback" not in res.stderr and (mixed / "metrics.jsonl").read_text() == before

    from safetensors.torch import load_file

    wa = load_file(str(ref / "final" / "model.safetensors"))
    wb = load_file(str(mixed / "final" / "model.safetensors"))
    assert set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
