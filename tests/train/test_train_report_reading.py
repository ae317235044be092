"""The report reads train outputs (and every stage JSON) without trusting them: torn lines of
metrics.jsonl, torn / list-shaped / deeply nested / absurd JSON files are skipped with a
warning naming the file, never a traceback, and every good record is kept."""

from __future__ import annotations

import json
from pathlib import Path

from longctx.report.collect import collect_run, read_metrics


def _train_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"stage": "train", "status": "done"}))
    good = [{"step": i, "loss": 5.0 - i} for i in (1, 2, 3)]
    with open(folder / "metrics.jsonl", "wb") as f:
        f.write((json.dumps(good[0]) + "\n").encode())
        f.write(b'{"step": 9, "loss": \xff\xfe}\n')            # invalid UTF-8 mid-file
        f.write((json.dumps(good[1]) + "\n").encode())
        f.write(b"[" * 50_000 + b"\n")                        # nested past the recursion limit
        f.write(b'{"step": ' + b"1" * 5000 + b"}\n")          # an int too long to convert
        f.write(b'["not", "a", "record"]\n')
        f.write((json.dumps(good[2]) + "\n").encode())
        f.write(b'{"step": 4, "loss": 1.')                    # torn last line
    return folder


def test_metrics_keep_every_good_row(tmp_path):
    folder = _train_folder(tmp_path / "t")
    warnings: list[str] = []
    rows = read_metrics(folder / "metrics.jsonl", warnings)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert len(warnings) == 4 and all("metrics.jsonl:" in w for w in warnings)
    assert any(":8:" in w for w in warnings)  # the torn last line, by number


def test_torn_and_hostile_stage_files_are_warnings(tmp_path):
    run = tmp_path / "run"
    _train_folder(run / "train")
    (run / "needle").mkdir(parents=True)
    (run / "needle" / "needle.json").write_text('{"stage": "eval.needle", "cells": [')
    (run / "loss").mkdir()
    (run / "loss" / "loss.json").write_text("[" * 50_000)
    (run / "bookqa").mkdir()
    (run / "bookqa" / "bookqa.json").write_text('{"score": ' + "9" * 5000 + "}")
    (run / "listed").mkdir()
    (run / "listed" / "manifest.json").write_text("[1, 2, 3]")
    (run / "torn").mkdir()
    (run / "torn" / "manifest.json").write_text('{"stage": "data.build", "sta')
    (run / "binary").mkdir()
    (run / "binary" / "stats.json").write_bytes(b"\xff\xfe{}")

    out = collect_run(run)
    kinds = [o.kind for o in out.outputs]
    assert kinds == ["train"]
    assert [r["step"] for r in out.outputs[0].metrics] == [1, 2, 3]
    text = "\n".join(out.warnings)
    for name in ("needle/needle.json", "loss/loss.json", "bookqa/bookqa.json",
                 "listed/manifest.json", "torn/manifest.json", "binary/stats.json"):
        assert name in text, name
    assert "RecursionError" in text
    assert all(len(w) < 600 for w in out.warnings)  # short, one line each
    assert all("\n" not in w for w in out.warnings)
