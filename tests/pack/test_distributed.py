"""The optional datatrove pre-index (local executor) gives the same build as a plain one."""

from __future__ import annotations

import json

import pytest

from longctx.pack.build import BuildConfig, run_build

pytest.importorskip("datatrove")


def test_datatrove_local_prescan_then_build_is_identical(gen_corpus_many, tmp_path):
    from longctx.pack.distributed import prescan

    def cfg(out):
        return BuildConfig(inputs=[str(gen_corpus_many)], out=str(out), tokens="40K",
                           seq_len=1024, long_threshold=512, seed=1)

    plain = run_build(cfg(tmp_path / "plain"), progress=False)
    info = prescan(cfg(tmp_path / "dt"), files=12, executor="local", tasks=3, workers=1)
    work = tmp_path / "dt" / ".work"
    markers = sorted(work.glob("*.index.done"))
    assert info["files"] == 12 and len(markers) == 12
    assert all(json.loads(m.read_text())["file"] for m in markers)
    built = run_build(cfg(tmp_path / "dt"), progress=False)
    assert [s["sha256"] for s in built["shards"]] == [s["sha256"] for s in plain["shards"]]
    assert built["domains"] == plain["domains"]
