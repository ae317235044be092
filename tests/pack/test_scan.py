"""Pass 2 (tokenize given candidates of one file from its index's text spill)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from longctx.mix.input_stats import PROVEN_SHORT
from longctx.mix.strategies import is_long
from longctx.pack.index import IndexTask, index_file, load_index
from longctx.pack.scan import ScanTask, load_done, load_meta, scan_file, spill_paths
from longctx.pack.tok import resolve_spec


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    rng = random.Random(1)
    folder = tmp_path_factory.mktemp("scan")
    path = folder / "part.jsonl"
    with open(path, "w") as f:
        for i in range(300):
            n = rng.randint(3, 200)
            f.write(json.dumps({"text": " ".join(rng.choice(("ab", "cd", "éf")) for _ in range(n)),
                                "meta": {"redpajama_set_name": "web" if i % 2 else "qa"}}) + "\n")
    work = folder / "work"
    spec = resolve_spec(None)
    summary = index_file(IndexTask(0, str(path), "part.jsonl", str(work), "h", spec, "text",
                                   "meta.redpajama_set_name", 1, 64, 0.2, False, 0.1, 0))
    return path, work, spec, summary


def _task(work, spec, rows, held, rnd=0):
    return ScanTask(index=0, round=rnd, work_dir=str(work), scan_hash="h", tokenizer=spec,
                    long_threshold=64, rows=np.asarray(rows, dtype=np.int64),
                    held_rows=np.asarray(held, dtype=np.int64))


def test_scan_tokenizes_exactly_the_rows_asked_and_spills_the_eligible(indexed, tok):
    path, work, spec, _ = indexed
    ix = load_index(work, 0)
    texts = {i: json.loads(x)["text"] for i, x in enumerate(path.read_text().splitlines(), 1)}
    rows = np.arange(0, len(ix["line"]), 3)
    held = np.arange(len(ix["held_line"]))[::2]
    summary = scan_file(_task(work, spec, rows, held))
    meta = load_meta(work, 0, 0)
    spill = np.fromfile(spill_paths(work, 0, 0)[0], dtype=tok.dtype)
    assert meta["row"].tolist() == rows.tolist() and meta["held_row"].tolist() == held.tolist()
    for pre, want in (("", rows), ("held_", held)):
        for k, r in enumerate(want):
            ids = tok.encode_documents([texts[int(ix[pre + "line"][r])]])[0]
            eligible = pre == "held_" or ix["kept"][r] or is_long(len(ids), 64)
            if meta[pre + "length"][k] == PROVEN_SHORT:  # the bound said so without tokens
                assert not eligible
            else:
                assert meta[pre + "length"][k] == len(ids)
            at = meta[pre + "start"][k]
            assert (at >= 0) == bool(eligible)
            if eligible:
                assert spill[at : at + len(ids)].tolist() == ids.tolist()
    assert summary["spilled"] == len(spill)
    measured = (meta["start"] < 0) & (meta["length"] >= 0)
    assert measured.any()  # some short, not-kept candidates were only measured
    assert summary["proven_short"] == int((meta["length"] == PROVEN_SHORT).sum())


def test_finished_round_is_reused_only_for_the_same_rows(indexed):
    _, work, spec, _ = indexed
    task = _task(work, spec, [1, 2, 5], [], rnd=3)
    first = scan_file(task)
    assert load_done(task) == first
    assert load_done(_task(work, spec, [1, 2, 6], [], rnd=3)) is None
    assert load_done(_task(work, spec, [1, 2, 5], [], rnd=4)) is None
