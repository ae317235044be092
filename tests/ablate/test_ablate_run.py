"""`longctx ablate` end to end on CPU: three arms x two seeds finish, a rerun reuses every
stage, and a run killed mid-build resumes to the very same ablation.json."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longctx.ablate.run import run_ablation

from .ablate_helpers import CPU_PRESET, cpu_config, without_timings

pytestmark = pytest.mark.slow  # one CPU ablation (3 arms x 2 seeds) shared by these tests

ARMS = ["original", "per_source", "book_up"]
STAGES = ["build", "train", "loss", "needle"]
LINE = re.compile(r"^ablate: (\w+) seed (\d+): (build|train|loss|needle) "
                  r"(started|finished in [0-9.]+ s|reused in [0-9.]+ s)$")


def _manifests(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted((root / "arms").rglob("manifest.json"))}


def test_three_arms_two_seeds_finish_with_everything_recorded(finished):
    r = finished.result
    assert list(r["arms"]) == ARMS and r["seeds"] == [0, 1] and r["baseline"] == "original"
    held = r["heldout"]
    assert held["split"] == "heldout" and held["scored"] == "arms/original/seed0/data/heldout"
    assert len(held["digest"]) == 16 and len(held["doc_ids_sha256"]) == 64
    for name in ARMS:
        arm = r["arms"][name]
        assert [s["seed"] for s in arm["seeds"]] == [0, 1]
        for s in arm["seeds"]:
            b = s["build"]
            assert b["tokens_total"] == 6 * 1024 and b["strategy"] == arm["mixture"]["strategy"]
            assert sum(d["tokens"] for d in b["domains"].values()) == b["tokens_total"]
            assert all(0 <= d["long_token_fraction"] <= 1 for d in b["domains"].values())
            assert [row["step"] for row in s["train"]["curve"]] == [1, 2, 3]
            loss = s["loss"]
            assert loss["split"] == "heldout" and loss["buckets"] == ["0-128", "128-512"]
            assert len(loss["domains"]) == 4  # every domain has held-out documents
            assert all(v["0-128"] is not None for v in loss["domains"].values())
            assert set(loss["positions"]) == {"64", "128", "256", "512"}
            assert loss["overall_interval95"]["0-128"][0] <= loss["overall"]["0-128"]
            cells = {(c["length"], c["depth"]) for c in s["needle"]["cells"]}
            assert cells == {(256, 0), (256, 100), (512, 0), (512, 100)}
        # every arm and seed scored the same held-out rows
        for s in arm["seeds"]:
            loss_json = json.loads((finished.dir / s["folder"] / "loss" / "loss.json").read_text())
            assert loss_json["data_read"].endswith("arms/original/seed0/data/heldout")
        st = arm["summary"]["loss"]["overall"]["128-512"]
        vals = st["values"]
        assert st["n"] == 2 and st["spread"] == max(vals) - min(vals)
        assert abs(st["mean"] - sum(vals) / 2) < 1e-12 and st["std"] > 0
    # seeds change the build: different mixtures, but one held-out split for all builds
    a, b = r["arms"]["original"]["seeds"]
    assert a["build"]["config_hash"] != b["build"]["config_hash"]
    # the upsampled domain got more of the tokens in book_up than in original
    share = {n: r["arms"][n]["summary"]["build"]["domains"]["StdlibPackages"]["share"]["mean"]
             for n in ARMS}
    assert share["book_up"] > share["original"] + 0.1
    assert [v.split(":")[0] for v in r["verdicts"]] == ["per_source vs original",
                                                        "book_up vs original"]
    assert (finished.dir / "report.html").is_file()


def test_held_out_documents_are_the_same_for_every_build(finished):
    digests = set()
    for name in ARMS:
        for seed in (0, 1):
            m = json.loads((finished.dir / "arms" / name / f"seed{seed}" / "data" /
                            "manifest.json").read_text())
            digests.add(m["heldout"]["doc_ids_sha256"])
    assert digests == {finished.result["heldout"]["doc_ids_sha256"]}


def test_progress_one_line_per_stage_start_and_finish(finished):
    stage_lines = [ln for ln in finished.lines if ln.startswith("ablate: ") and " seed " in ln]
    assert stage_lines and all(LINE.match(ln) for ln in stage_lines), stage_lines
    seen = [LINE.match(ln).groups()[:3] for ln in stage_lines]
    for name in ARMS:
        for seed in ("0", "1"):
            for stage in STAGES:
                assert seen.count((name, seed, stage)) == 2  # started + finished
    assert sum(ln.startswith("verdict: ") for ln in finished.lines) == 2


def test_rerun_reuses_every_stage(finished, ablate_corpus):
    before = _manifests(finished.dir)
    assert len(before) == 6 * 5  # 4 stages x 6 units, plus each build's held-out folder
    t0 = time.perf_counter()
    again = run_ablation(cpu_config(finished.dir, ablate_corpus), echo=lambda s: None)
    took = time.perf_counter() - t0
    assert _manifests(finished.dir) == before  # nothing rewritten, not even a manifest
    statuses = {st["status"] for where in again["timings"]["stages"].values()
                for st in where.values()}
    assert statuses == {"reused"}
    assert len(again["timings"]["stages"]) == 6
    assert without_timings(again) == without_timings(finished.result)
    assert took < finished.seconds / 2


def test_killed_mid_ablation_then_rerun_gives_the_same_json(finished, ablate_corpus, tmp_path):
    """SIGKILL the whole process group while the third arm's second build is scanning, then
    rerun: the result equals the uninterrupted run's (the third arm was removed first, so
    the killed run really had to build it)."""
    out = finished.dir
    shutil.rmtree(out / "arms" / "book_up")
    (out / "ablation.json").unlink()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               LONGCTX_BUILD_FAIL_AT="slow:0.4")
    log = tmp_path / "killed.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "longctx", "ablate", "--config", str(CPU_PRESET),
             "--out", str(out), "--set", f"corpus.inputs={ablate_corpus}"],
            env=env, start_new_session=True, stdout=sink, stderr=subprocess.STDOUT)
        work = out / "arms" / "book_up" / "seed1" / "data" / ".work"
        deadline = time.time() + 120
        while not list(work.glob("*.done")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    text = log.read_text()
    assert proc.returncode == -signal.SIGKILL, text
    assert "ablate: book_up seed 0: build finished in" in text
    assert "ablate: book_up seed 1: build started" in text
    assert "book_up seed 1: build finished" not in text
    held = json.loads((out / "arms/book_up/seed1/data/manifest.json").read_text())
    assert held["status"] == "running" and not (out / "ablation.json").exists()

    resumed = run_ablation(cpu_config(out, ablate_corpus), echo=lambda s: None)
    stages = resumed["timings"]["stages"]
    assert stages["original seed 0"]["train"]["status"] == "reused"
    assert stages["book_up seed 0"]["build"]["status"] == "reused"
    assert all(stages["book_up seed 1"][s]["status"] == "ran" for s in STAGES)
    assert without_timings(resumed) == without_timings(finished.result)
    on_disk = json.loads((out / "ablation.json").read_text())
    assert without_timings(on_disk) == without_timings(finished.result)
