"""Big files read in ranges inside ``data build``: a corpus whose big .jsonl and multi-frame
.zst are split into many ranges builds byte-identical shards and manifests to the unsplit
build, for 1 and 2 workers, and its scan holds the same candidates and held-out documents."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import zstandard

from longctx.pack import parts
from longctx.pack import passes as passes_module
from longctx.pack.build import run_build
from longctx.pack.buildplan import FAIL_HOOK_ENV, BuildConfig, open_work_dir, plan_scan
from longctx.pack.index import index_paths
from longctx.pack.parts import file_ranges
from longctx.pack.passes import scan_inputs
from longctx.progress import progress_bar

from .pack_corpus import PROFILES, _text

SPLIT = 8_000  # bytes: the two big files become several ranges each


def comparable(out: Path, manifest: dict) -> dict:
    """A build's shard bytes and manifests, minus timings and where it was written."""
    m = {k: v for k, v in manifest.items() if k != "seconds"}
    held = out / "heldout"
    return {
        "manifest": m,
        "shards": {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.arrow"))},
        "heldout": {p.name: p.read_bytes() for p in sorted(held.glob("*"))},
    }


def _zst_frames(data: bytes, rnd: random.Random) -> bytes:
    """Many zstd frames of random sizes, most of them ending mid-line."""
    out, pos = [], 0
    while pos < len(data):
        end = min(len(data), pos + rnd.randint(2_000, 9_000))
        out.append(zstandard.ZstdCompressor(level=1).compress(data[pos:end]))
        pos = end
    return b"".join(out)


@pytest.fixture(scope="module")
def split_corpus(tmp_path_factory) -> Path:
    return write_split_corpus(tmp_path_factory.mktemp("split_corpus"))


def write_split_corpus(folder: Path) -> Path:
    """A big .jsonl, a multi-frame .jsonl.zst (with a malformed line each) and a small file."""
    rng = random.Random(7)
    docs = []
    for domain, (n, frac_long, short, long) in PROFILES.items():
        for _ in range(n // 3 + 2):
            lo, hi = long if rng.random() < frac_long else short
            docs.append(json.dumps({"text": _text(rng, domain, rng.randint(lo, hi) // 3),
                                    "meta": {"redpajama_set_name": domain}}))
    rng.shuffle(docs)
    a, b = len(docs) * 5 // 11, len(docs) * 10 // 11
    big = docs[:a]
    big.insert(40, '{"text": "broken')
    (folder / "big.jsonl").write_text("\n".join(big) + "\n")
    framed = docs[a:b]
    framed.insert(25, "not json")
    data = ("\n".join(framed) + "\n").encode()
    (folder / "framed.jsonl.zst").write_bytes(_zst_frames(data, rng))
    (folder / "small.jsonl").write_text("\n".join(docs[b:]) + "\n")
    return folder


def build_args(corpus: Path, out: Path, **kw) -> BuildConfig:
    args = dict(inputs=[str(corpus)], out=str(out), tokens="8K", seq_len=1024,
                long_threshold=256, short_keep=0.2, seed=3, eval_tokens="3K", eval_fraction=0.1)
    args.update(kw)
    return BuildConfig(**args)


def build(corpus: Path, out: Path, **kw) -> dict:
    man = run_build(build_args(corpus, out, **kw), progress=False)
    return comparable(out, man)


@pytest.fixture(scope="module")
def unsplit(split_corpus, tmp_path_factory):
    return build(split_corpus, tmp_path_factory.mktemp("unsplit"), split_bytes=0)


def test_big_files_are_split_into_several_ranges(split_corpus):
    plan = plan_scan(build_args(split_corpus, split_corpus.parent / "o", split_bytes=SPLIT))
    counts = {Path(t.path).name: len(file_ranges(t, SPLIT)) for t in plan.tasks}
    assert counts["big.jsonl"] >= 4 and counts["framed.jsonl.zst"] >= 4


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_split_build_is_byte_identical_to_the_unsplit(split_corpus, unsplit, tmp_path, workers):
    got = build(split_corpus, tmp_path / "split", split_bytes=SPLIT, workers=workers)
    assert got["manifest"] == unsplit["manifest"]
    assert got["shards"] == unsplit["shards"] and got["shards"]
    assert got["heldout"] == unsplit["heldout"] and got["heldout"]
    assert unsplit["manifest"]["skipped"] == {"malformed_json": 2}


def _scan(corpus: Path, out: Path, split: int):
    plan = plan_scan(build_args(corpus, out, split_bytes=split))
    plan.out.mkdir(parents=True, exist_ok=True)
    open_work_dir(plan)
    with progress_bar(False) as bar:
        return plan, scan_inputs(plan, bar)


def test_split_scan_holds_the_unsplit_candidates_and_rounds(split_corpus, tmp_path):
    _, whole = _scan(split_corpus, tmp_path / "a", 0)
    plan, split = _scan(split_corpus, tmp_path / "b", SPLIT)
    assert max(len(split.parts[t.index].parts) for t in plan.tasks) >= 4
    assert split.summaries == [{**s, "cpu_s": t["cpu_s"]}
                               for s, t in zip(whole.summaries, split.summaries, strict=True)]
    for table in ("cand", "held"):
        a, b = getattr(whole.pool, table), getattr(split.pool, table)
        for col in ("file", "row", "line", "domain", "nbytes", "priority", "kept", "length"):
            np.testing.assert_array_equal(a[col], b[col], err_msg=f"{table}.{col}")
    assert whole.pool.rounds == split.pool.rounds
    # the ranges' lines are the file's: the split scan's work folder has range files
    assert list(plan.work.glob("*.p0001.index.done")) and list(plan.work.glob("*.lines"))


def test_subset_of_split_files_equals_the_unsplit_subset(gen_corpus_many, tmp_path):
    """24 files, each cut in ranges; a small budget reads a seeded subset of them, in
    batches (each batch's ranges counted, then indexed): the same files, the same build."""
    args = dict(tokens="40K", seq_len=1024, long_threshold=512, seed=1, eval_tokens=None)
    whole = build(gen_corpus_many, tmp_path / "a", split_bytes=0, **args)
    split = build(gen_corpus_many, tmp_path / "b", split_bytes=30_000, workers=2, **args)
    files = whole["manifest"]["input_files"]
    assert files["subset"] and files["read"] < files["total"]
    assert split["manifest"] == whole["manifest"] and split["shards"] == whole["shards"]


def test_interrupted_split_build_reuses_its_ranges_and_equals_the_unsplit(
        split_corpus, unsplit, tmp_path, monkeypatch):
    """Stopped after 9 range results (mid-file), then rerun: the finished ranges are taken
    from their markers, the rest indexed, the build the same."""
    out = tmp_path / "x"
    monkeypatch.setenv(FAIL_HOOK_ENV, "scan:9")
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run_build(build_args(split_corpus, out, split_bytes=SPLIT), progress=False)
    done = {p: p.stat().st_mtime_ns for p in (out / ".work").glob("*.index.done")}
    assert len(done) == 9
    monkeypatch.delenv(FAIL_HOOK_ENV)
    seen: dict = {}
    real = parts.merge_parts

    def spy(work, summaries):  # the markers' mtimes, read while the work folder exists
        for s in summaries:
            p = index_paths(work, s["index"], s["part"])[2]
            seen[p] = p.stat().st_mtime_ns
        return real(work, summaries)

    monkeypatch.setattr(passes_module, "merge_parts", spy)
    man = run_build(build_args(split_corpus, out, split_bytes=SPLIT), progress=False)
    assert all(seen[p] == t for p, t in done.items())  # not indexed again
    assert comparable(out, man) == unsplit
