from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from longctx.data import demo_corpus as D
from longctx.data.readers import Fields, expand_inputs, iter_documents
from longctx.stage import read_manifest, sha256_file


def test_water_fill_hand_computed():
    # Budget 100 over pools 5, 20, 200, 300: 5 and 20 give all, the rest share 75 equally.
    # (The smaller pool takes the floor of the equal share, the last one the remainder.)
    assert D.water_fill({"a": 5, "b": 20, "c": 200, "d": 300}, 100) == {
        "a": 5, "b": 20, "c": 37, "d": 38
    }
    # Beyond the total, every pool scales by the same factor (documents repeat).
    assert D.water_fill({"a": 10, "b": 30}, 80) == {"a": 20, "b": 60}


def test_layout_manifest_and_domains(demo_small):
    m = read_manifest(demo_small)
    assert m["stage"] == "data.demo_corpus" and m["status"] == "done"
    files = expand_inputs([demo_small])  # the folder itself is a valid input (manifest skipped)
    assert [f.relative_to(demo_small).as_posix() for f in files] == [
        f"train/chunk1/example_train_{i}.jsonl.zst" for i in range(3)
    ]
    assert [f["sha256"] for f in m["files"]] == [sha256_file(f) for f in files]
    # Every record is SlimPajama-shaped and the manifest's counts are what the files hold.
    skipped: Counter = Counter()
    docs = list(iter_documents([demo_small], Fields(), skipped, strict=True))
    per_domain = Counter(d.domain for d in docs)
    assert not skipped
    assert {d: v["docs"] for d, v in m["domains"].items()} == dict(per_domain)
    nbytes = Counter()
    for d in docs:
        nbytes[d.domain] += len(d.text.encode())
    assert {d: v["bytes"] for d, v in m["domains"].items()} == dict(nbytes)
    core = {D.PACKAGES, D.MODULES, D.REFERENCE, D.DOCSTRINGS}
    assert core <= set(per_domain)
    # ~1.5 MB asked: whole documents, so a little over is allowed, never far under.
    assert 1.4e6 <= m["text_bytes"] <= 1.5e6 + 600_000
    # Globally shuffled: the first file holds several domains.
    first = [d.domain for d in docs if d.file == str(files[0])]
    assert len(set(first)) >= 4
    rec = json.loads(next(iter(_lines(files[0]))))
    assert set(rec) == {"text", "meta"} and set(rec["meta"]) == {"redpajama_set_name", "source"}


def _lines(path: Path):
    import zstandard

    data = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    return data.decode().splitlines()


def test_same_bytes_in_a_fresh_process(demo_small, tmp_path):
    """Deterministic across processes (hash randomisation differs) and reruns."""
    out = tmp_path / "again"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    code = (
        "from longctx.data.demo_corpus import write_demo_corpus;"
        f"write_demo_corpus({str(out)!r}, max_mb=1.5, num_files=3)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    a, b = read_manifest(demo_small), read_manifest(out)
    assert [f["sha256"] for f in a["files"]] == [f["sha256"] for f in b["files"]]
    assert a["config_hash"] == b["config_hash"]
    # A rerun with the same config is skipped (manifest untouched).
    before = (out / "manifest.json").read_bytes()
    D.write_demo_corpus(out, max_mb=1.5, num_files=3)
    assert (out / "manifest.json").read_bytes() == before


def test_different_seed_changes_the_order_not_the_recipe(demo_small, tmp_path):
    m = D.write_demo_corpus(tmp_path / "s1", max_mb=1.5, num_files=3, seed=1)
    ref = read_manifest(demo_small)
    assert [f["sha256"] for f in m["files"]] != [f["sha256"] for f in ref["files"]]
    # Same domains; the smallest domain is taken whole whatever the seed.
    assert set(m["domains"]) == set(ref["domains"])
    smallest = min(ref["domains"], key=lambda d: ref["domains"][d]["pool_bytes"])
    assert m["domains"][smallest] == ref["domains"][smallest]
    assert m["domains"][smallest]["docs"] == m["domains"][smallest]["pool_docs"]


def _fake_stdlib(root: Path) -> Path:
    """A minimal 'stdlib' without test/ or idlelib: only modules and one package."""
    (root / "pkg").mkdir(parents=True)
    (root / "alpha.py").write_text('"""Alpha module doc."""\n\ndef f():\n    """F doc."""\n' * 20)
    (root / "beta.py").write_text('"""Beta module."""\n\nclass K:\n    """K doc."""\n' * 20)
    (root / "pkg" / "__init__.py").write_text('"""Package doc."""\nX = 1\n' * 50)
    (root / "pkg" / "core.py").write_text("def g():\n    return 2\n" * 50)
    (root / "site-packages").mkdir()
    (root / "site-packages" / "other.py").write_text("# not stdlib\n")
    return root


def test_missing_test_and_idlelib_folders_and_repeats(tmp_path):
    root = _fake_stdlib(tmp_path / "lib")
    pools = D.collect_pools(root)
    assert D.TESTS not in pools and D.NOTES not in pools
    assert {i.source for i in pools[D.MODULES]} == {"stdlib/alpha.py", "stdlib/beta.py"}
    assert [i.source for i in pools[D.PACKAGES]] == ["stdlib/pkg/"]
    assert "# ---- pkg/core.py ----" in pools[D.PACKAGES][0].load()
    assert len(pools[D.REFERENCE]) > 10  # pydoc_data of the running Python
    pool_bytes = sum(i.nbytes for items in pools.values() for i in items)
    m = D.write_demo_corpus(tmp_path / "out", max_mb=3 * pool_bytes / 1e6, root=root)
    assert len(m["domains"]) >= 4
    assert m["domains"][D.MODULES]["repeated_docs"] > 0
    assert m["text_bytes"] >= 3 * pool_bytes - 10_000
    sources = Counter()
    for f in expand_inputs([tmp_path / "out"]):
        for line in _lines(f):
            rec = json.loads(line)
            if rec["meta"]["redpajama_set_name"] == D.MODULES:
                sources[rec["meta"]["source"].split("@")[0]] += 1
    # Each module appears about three times (original + repeats), never just once.
    assert set(sources) == {"stdlib/alpha.py", "stdlib/beta.py"}
    assert min(sources.values()) >= 2


def test_rejects_bad_size(tmp_path):
    with pytest.raises(D.DemoCorpusError, match="max-mb"):
        D.write_demo_corpus(tmp_path, max_mb=0)
