"""The output-folder contract on the data build: locks, foreign folders, tampered inputs.

Each test runs the real CLI in a subprocess where it matters (exit code 2, one line, no
traceback) and asserts that nothing outside the folder was read or deleted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longctx.pack.build import run_build
from longctx.pack.buildplan import BuildConfig
from longctx.pack.shards import PackedDataset
from longctx.stage import StageError, stage_output

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "longctx", *args], capture_output=True,
                          text=True, env=env or ENV, timeout=300)


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def _cfg(corpus: Path, out: Path, **kw) -> BuildConfig:
    kw = {"tokens": "10K", "seq_len": 1024, "long_threshold": 512, **kw}
    return BuildConfig(inputs=[str(corpus)], out=str(out), **kw)


def test_second_run_into_a_locked_folder_fails_naming_the_holder(tmp_path):
    with stage_output(tmp_path / "o", "data.build"):
        with pytest.raises(StageError, match=r"in use by another longctx run \(pid \d+"):
            with stage_output(tmp_path / "o", "data.build"):
                pass
    with stage_output(tmp_path / "o", "data.build"):  # released on exit
        pass


def test_concurrent_builds_into_one_folder_never_end_done_with_wrong_data(gen_corpus, tmp_path):
    out = tmp_path / "o"
    base = ["data", "build", str(gen_corpus), "--out", str(out), "--tokens", "30K",
            "--seq-len", "1024", "--long-threshold", "512", "--no-progress"]
    env = {**ENV, "LONGCTX_BUILD_FAIL_AT": "slow:3"}
    first = subprocess.Popen([sys.executable, "-m", "longctx", *base, "--seed", "1"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # the first holds the lock while it scans (3 s per file)
        if '"running"' in ((out / "manifest.json").read_text() if (out / "manifest.json").exists() else ""):
            break
        time.sleep(0.1)
    second = _cli(*base, "--seed", "2")
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert "in use by another longctx run" in _one_line_error(second)
    # the folder holds exactly the first build; a clean build with seed 1 is identical
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "done" and man["seed"] == 1
    ref = run_build(_cfg(gen_corpus, tmp_path / "ref", seed=1, tokens="30K"), progress=False)
    assert [s["sha256"] for s in man["shards"]] == [s["sha256"] for s in ref["shards"]]


def test_foreign_folder_is_refused_and_nothing_in_it_is_deleted(gen_corpus, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "shard-00000.arrow").write_bytes(b"not ours")
    (out / ".work").mkdir()
    (out / ".work" / "x").write_text("keep")
    r = _cli("data", "build", str(gen_corpus), "--out", str(out), "--tokens", "10K",
             "--seq-len", "1024", "--long-threshold", "512")
    assert "did not write" in _one_line_error(r) and "--force" in r.stderr
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "shard-00000.arrow").read_bytes() == b"not ours"
    # --force takes it over: the build lands, files it did not write are left in place
    run_build(_cfg(gen_corpus, out, force=True), progress=False)
    assert (out / "notes.txt").read_text() == "keep me"
    assert PackedDataset(out).manifest["status"] == "done"


def test_output_inside_or_around_an_input_is_refused(gen_corpus, tmp_path):
    r = _cli("data", "build", str(gen_corpus), "--out", str(gen_corpus / "packed"),
             "--tokens", "10K", "--seq-len", "1024")
    assert "overlaps the input" in _one_line_error(r)
    assert not (gen_corpus / "packed").exists()


def test_another_stages_folder_is_refused(gen_corpus, tmp_path):
    out = tmp_path / "d"
    run_build(_cfg(gen_corpus, out), progress=False)
    r = _cli("data", "export", str(out), "--out", str(out))
    assert "overlaps the input" in _one_line_error(r)
    stats_like = tmp_path / "s"
    stats_like.mkdir()
    (stats_like / "manifest.json").write_text(json.dumps({"stage": "data.stats", "status": "done"}))
    r = _cli("data", "build", str(gen_corpus), "--out", str(stats_like), "--tokens", "10K",
             "--seq-len", "1024")
    assert "'data.stats' output" in _one_line_error(r)


def test_tampered_shard_is_refused_and_a_rerun_rebuilds_it(gen_corpus, tmp_path):
    out = tmp_path / "d"
    first = run_build(_cfg(gen_corpus, out), progress=False)
    shard = out / first["shards"][0]["path"]
    blob = bytearray(shard.read_bytes())
    blob[-100] ^= 0xFF  # same size; mtime restored: only the content (and ctime) differ
    st = shard.stat()
    shard.write_bytes(bytes(blob))
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = _cli("data", "export", str(out), "--out", str(tmp_path / "x"))
    assert "does not match" in _one_line_error(r) and shard.name in r.stderr
    again = run_build(_cfg(gen_corpus, out), progress=False)  # not "already built"
    assert not again.get("skipped_rerun")
    assert again["shards"][0]["sha256"] == first["shards"][0]["sha256"]
    PackedDataset(out)  # verified again


@pytest.mark.parametrize("path", ["../outside.arrow", "/etc/hostname", "sub/../../x.arrow"])
def test_manifest_paths_outside_the_folder_are_refused(gen_corpus, tmp_path, path):
    out = tmp_path / "d"
    run_build(_cfg(gen_corpus, out), progress=False)
    outside = tmp_path / "outside.arrow"
    outside.write_bytes((out / "shard-00000.arrow").read_bytes())
    man = json.loads((out / "manifest.json").read_text())
    man["shards"][0]["path"] = path
    (out / "manifest.json").write_text(json.dumps(man))
    r = _cli("data", "export", str(out), "--out", str(tmp_path / "x"))
    assert "outside" in _one_line_error(r) or "not a relative" in r.stderr


@pytest.mark.parametrize("content", ['{"stage": "data.build", "status": "do', "[1, 2]", "\xff"])
def test_torn_manifest_means_not_done_and_the_build_reruns(gen_corpus, tmp_path, content):
    out = tmp_path / "d"
    first = run_build(_cfg(gen_corpus, out), progress=False)
    (out / "manifest.json").write_text(content, encoding="latin-1")
    again = run_build(_cfg(gen_corpus, out), progress=False)
    assert not again.get("skipped_rerun")
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in first["shards"]]


def test_edited_corpus_file_of_the_same_size_and_mtime_is_rebuilt(gen_corpus, tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    for p in sorted(gen_corpus.glob("*.jsonl")):
        (corpus / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "d"
    first = run_build(_cfg(corpus, out, subset=False), progress=False)
    victim = sorted(corpus.glob("*.jsonl"))[0]
    st = victim.stat()
    text = victim.read_text()
    victim.write_text(text.replace("the", "teh", 50))  # same size
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert victim.stat().st_size == st.st_size and victim.stat().st_mtime_ns == st.st_mtime_ns
    again = run_build(_cfg(corpus, out, subset=False), progress=False)
    assert not again.get("skipped_rerun")
    assert again["config_hash"] != first["config_hash"]
