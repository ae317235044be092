"""``torchrun -m longctx.eval needle|ruler|loss``: 2 CPU processes (gloo) write what 1 writes.

Compared apart from timings: every ``seconds`` field, and in the manifest the fields that
measure the run rather than its result (``world_size``, ``prefill`` token counts, which
depend on where the grid was cut between ranks, and ``checksums`` of files that hold the
``seconds``). A rank killed mid-grid loses only its cell in progress: a 1-process rerun
reuses every finished record of both ranks and writes the same JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from longctx.eval.distributed import FAIL_HOOK_ENV, PartialLog, Ranks

REPO = Path(__file__).resolve().parents[2]
MEASURED = {"seconds", "world_size", "prefill", "checksums"}


def run_eval(args: list[str], nproc: int = 1, env: dict[str, str] | None = None,
             ok: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    launch = [sys.executable, "-m", "longctx.eval"]
    if nproc > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc-per-node", str(nproc), "-m", "longctx.eval"]
    res = subprocess.run([*launch, *args], env=full_env, capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert (res.returncode == 0) == ok, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def without(doc, keys: set[str]):
    if isinstance(doc, dict):
        return {k: without(v, keys) for k, v in doc.items() if k not in keys}
    if isinstance(doc, list):
        return [without(v, keys) for v in doc]
    return doc


def outputs(folder: Path, result: str) -> tuple[dict, dict]:
    """(result JSON, manifest), both without the measured fields."""
    doc = json.loads((folder / result).read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    return without(doc, MEASURED), without(manifest, MEASURED)


def assert_merged(folder: Path, log: str, records: int) -> None:
    """The ranks' partial files were folded into the single-process file, one line each."""
    assert not list(folder.glob(f"{log}.rank*.jsonl"))
    lines = (folder / f"{log}.jsonl").read_text().splitlines()
    assert len(lines) == records


def needle_args(model: Path, out: Path) -> list[str]:
    return ["needle", "--model", str(model), "--lengths", "160,220", "--depths", "0,50,100",
            "--max-new-tokens", "8", "--device", "cpu", "--out", str(out)]


def test_two_processes_write_the_single_process_needle_json(tiny_model, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run_eval(needle_args(tiny_model, one))
    res = run_eval(needle_args(tiny_model, two), nproc=2)
    assert res.stdout.count("needle: 6 cells") == 1  # the summary line comes from rank 0 only
    assert outputs(two, "needle.json") == outputs(one, "needle.json")
    cells = json.loads((two / "needle.json").read_text())["cells"]
    assert [(c["length"], c["depth"]) for c in cells] == [
        (n, d) for n in (160, 220) for d in (0, 50, 100)]
    assert json.loads((two / "manifest.json").read_text())["world_size"] == 2
    assert_merged(two, "cells", 6)


def test_rank_killed_mid_grid_then_one_process_resumes_to_the_same_json(tiny_model, tmp_path):
    one, killed = tmp_path / "one", tmp_path / "killed"
    run_eval(needle_args(tiny_model, one))
    run_eval(needle_args(tiny_model, killed), nproc=2, env={FAIL_HOOK_ENV: "1:1"}, ok=False)
    assert not (killed / "needle.json").exists()
    assert json.loads((killed / "manifest.json").read_text())["status"] == "running"
    rank1 = (killed / "cells.rank1.jsonl").read_text().splitlines()
    assert len(rank1) == 1  # rank 1 died right after its first cell reached its file

    run_eval(needle_args(tiny_model, killed))
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["counts"]["reused"] >= 1 and manifest["counts"]["computed_now"] <= 5
    assert outputs(killed, "needle.json")[0] == outputs(one, "needle.json")[0]
    assert without(manifest, MEASURED | {"counts"}) == without(
        json.loads((one / "manifest.json").read_text()), MEASURED | {"counts"})
    assert_merged(killed, "cells", 6)


def test_two_processes_write_the_single_process_ruler_json(tiny_model, tmp_path):
    args = ["ruler", "--model", str(tiny_model), "--lengths", "300,420", "--tasks",
            "niah_single_1,niah_multikey_1", "--samples", "2", "--device", "cpu"]
    one, two = tmp_path / "one", tmp_path / "two"
    run_eval([*args, "--out", str(one)])
    run_eval([*args, "--out", str(two)], nproc=2)
    assert outputs(two, "ruler.json") == outputs(one, "ruler.json")
    assert len(json.loads((two / "ruler.json").read_text())["cells"]) == 8
    assert_merged(two, "cells", 8)


def test_two_processes_write_the_single_process_loss_json(tiny_model, packed_redpajama,
                                                          tmp_path):
    args = ["loss", "--model", str(tiny_model), "--data", str(packed_redpajama), "--buckets",
            "0-64,64-256", "--positions", "64,128,256", "--device", "cpu"]
    one, two = tmp_path / "one", tmp_path / "two"
    run_eval([*args, "--out", str(one)])
    run_eval([*args, "--out", str(two)], nproc=2)
    a, b = outputs(one, "loss.json"), outputs(two, "loss.json")
    assert b == a  # bootstrap intervals included: computed once, from the same per-row sums
    assert a[0]["overall_interval95"]["0-64"] is not None
    rows = a[0]["tokens"]["rows"]
    assert rows >= 2
    assert_merged(two, "rows", rows)
    # a finished folder run again with another world size reuses every row
    shutil.rmtree(one)
    shutil.copytree(two, one)
    (one / "manifest.json").unlink()
    run_eval([*args, "--out", str(one), "--force"])
    manifest = json.loads((one / "manifest.json").read_text())
    assert manifest["counts"]["computed_now"] == 0 and manifest["counts"]["reused"] == rows
    assert outputs(one, "loss.json")[0] == b[0]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shares_are_contiguous_blocks_covering_every_item_once(world):
    items = list(range(11))
    weights = [1, 5, 1, 1, 9, 2, 2, 2, 1, 1, 3]
    shares = [Ranks(r, world).share(items, weights) for r in range(world)]
    assert [i for s in shares for i in s] == items
    for s in shares:
        assert s == list(range(s[0], s[0] + len(s))) if s else True


def test_partial_log_merges_rank_files_and_skips_torn_lines(tmp_path):
    with PartialLog(tmp_path, "cells", Ranks()).sink() as write:
        write({"k": 0})
    for rank, recs in ((0, [{"k": 1}]), (1, [{"k": 2}, {"k": 3}])):
        with PartialLog(tmp_path, "cells", Ranks(rank, 2)).sink() as write:
            for rec in recs:
                write(rec)
    with open(tmp_path / "cells.rank1.jsonl", "a") as f:
        f.write('{"k": 4')  # a kill in the middle of a write
    log = PartialLog(tmp_path, "cells", Ranks(0, 2))
    assert [r["k"] for r in log.records()] == [0, 1, 2, 3]
    log.merge()
    assert not list(tmp_path.glob("cells.rank*.jsonl"))
    assert [json.loads(x)["k"] for x in (tmp_path / "cells.jsonl").read_text().splitlines()] \
        == [0, 1, 2, 3]
