"""``longctx demo``: the step plan, and (slow) the quick demo end to end through the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from longctx.demo import DemoPlan, _steps

from .htmlparse import decode_png, parse


def test_demo_plan_runs_every_stage_through_the_cli(tmp_path: Path) -> None:
    plan = DemoPlan.full()
    steps = _steps(tmp_path, plan)
    commands = [" ".join(s.argv[:2]) for s in steps]
    assert commands[:3] == ["data demo-corpus", "data stats", "data build"]
    assert commands[3:5] == ["eval loss", "eval needle"]
    assert commands[5:-1] == ["train --data", "eval loss"] * len(plan.seeds)
    assert commands[-1] == "eval needle"
    assert plan.needle_samples >= 2  # several needles per cell: the needle noise is measured
    build = steps[2].argv
    assert build[build.index("--strategy") + 1] == "per_source"
    assert "--eval-tokens" in build  # held-out documents for every loss
    for loss in (s.argv for s in steps if s.argv[:2] == ["eval", "loss"]):
        assert loss[loss.index("--data") + 1] == str(tmp_path / "data")
    train = steps[5].argv
    # continual pretraining with an enlarged RoPE base (SmolLM2-135M ships with 1e5)
    assert float(train[train.index("--rope-theta") + 1]) > 1e5
    # needle before and after on the same grid and needles, reaching beyond the 8K context
    before, after = steps[4].argv, steps[-1].argv
    for flag in ("--lengths", "--depths", "--samples"):
        assert before[before.index(flag) + 1] == after[after.index(flag) + 1]
    assert max(plan.needle_lengths) > 8192 and plan.needle_samples >= 2
    assert after[after.index("--model") + 1] == str(tmp_path / "train-seed0" / "final")


def test_demo_summary_states_noise_beside_every_difference(tmp_path: Path) -> None:
    """The headline is computed from the run's files: differences with intervals and seed
    spread, verdicts that follow them, and the scale against the paper."""
    import json

    from longctx.demo import summarize

    plan = DemoPlan.full()
    plan.seeds = [0, 1]  # two training seeds: the seed spread enters the verdict

    def loss(shift_a: float, shift_b: float, split: str = "heldout") -> dict:
        sums = [[100 * (2.0 + 0.1 * i + shift_a), 50 * (1.5 + shift_b), 0.0] for i in range(10)]
        counts = [[100, 50, 0] for _ in range(10)]
        return {"buckets": ["0-1024", "1024-4096", "4096-10240"], "split": split,
                "overall": {"0-1024": 2.45 + shift_a, "1024-4096": 1.5 + shift_b,
                            "4096-10240": None},
                "per_document": {"id": [f"{i}:0" for i in range(10)], "domain": ["a"] * 10,
                                 "bucket_sums": sums, "bucket_counts": counts}}

    def write(sub: str, name: str, data: dict) -> None:
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        (tmp_path / sub / name).write_text(json.dumps(data))

    write("loss-before", "loss.json", loss(0.0, 0.0))
    write("loss-after-seed0", "loss.json", loss(-0.2, 0.0))
    write("loss-after-seed1", "loss.json", loss(-0.19, 0.0))
    write("train-seed0", "manifest.json", {"tokens": 32768})
    cells = [{"length": n, "depth": d, "score": 0.0, "samples": [
        {"scores": {"ruler": 0.0}}, {"scores": {"ruler": 0.0}}]}
        for n in plan.needle_lengths for d in (0, 50, 100)]
    write("needle-before", "needle.json", {"headline": "ruler", "cells": cells})
    after = json.loads(json.dumps(cells))
    after[3]["samples"][0]["scores"]["ruler"] = 1.0  # one of six needles at 10,240 found
    write("needle-after", "needle.json", {"headline": "ruler", "cells": after})
    s = summarize(tmp_path, plan)
    rows = {r["bucket"]: r for r in s["loss"]}
    assert rows["0-1024"]["beyond_noise"]  # -0.2 and -0.19, every document, spread 0.01
    assert abs(rows["0-1024"]["seed_spread"]["range"] - 0.01) < 1e-9
    assert not rows["1024-4096"]["beyond_noise"]  # no change at all
    needle = {r["length"]: r for r in s["needle"]}
    long = needle[plan.needle_lengths[-1]]
    assert long["needles"] == 6 and not long["beyond_noise"]
    text = "\n".join(s["headline"])
    assert "held-out documents" in text and "interval" in text and "within noise" in text
    assert "beyond noise: better" in text and "of the paper's 5B tokens" in text
    assert s["scale"]["trained_tokens"] == 32768
    one_doc = loss(0.0, 0.0)
    one_doc["overall"]["4096-10240"] = 2.0
    for sums in one_doc["per_document"]["bucket_sums"][1:]:
        sums[2] = 0.0
    one_doc["per_document"]["bucket_sums"][0][2] = 200.0
    for counts in one_doc["per_document"]["bucket_counts"]:
        counts[2] = 0
    one_doc["per_document"]["bucket_counts"][0][2] = 100
    write("loss-before", "loss.json", one_doc)
    assert "fewer than 2 held-out documents" in "\n".join(summarize(tmp_path, plan)["headline"])
    write("loss-before", "loss.json", loss(0.0, 0.0, split="train"))
    assert "TRAINING rows" in "\n".join(summarize(tmp_path, plan)["headline"])


def test_demo_reports_a_missing_stage_by_name(tmp_path: Path, monkeypatch) -> None:
    """A stage that is not there (or fails) stops the demo with a message naming the step."""
    from longctx import demo

    def fail(argv):
        raise NotImplementedError

    monkeypatch.setattr(demo, "run_cli", fail)
    with pytest.raises(demo.DemoError, match="demo step 'demo corpus' cannot run"):
        demo.run_demo(tmp_path, DemoPlan.quick())


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_COLOR="1")
    proc = subprocess.run(
        [sys.executable, "-m", "longctx", "demo", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=1200, env=env,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    report = out / "report.html"
    assert report.is_file()
    assert str(report.resolve()) in proc.stdout.replace("\n", "")
    p = parse(report.read_text(encoding="utf-8"))
    assert len(p.imgs) >= 4
    for src in p.imgs:
        decode_png(src)
    assert not any(u[2].lower().startswith(("http:", "https:", "//")) for u in p.urls)
    for sub in ("corpus", "stats", "data", "needle-before", "train-seed0", "needle-after"):
        assert (out / sub / "manifest.json").is_file(), sub
    assert (out / "train-seed0" / "final" / "config.json").is_file()
    summary = (out / "demo.json").read_text()
    assert '"heldout"' in summary and "What this demo measured" in report.read_text()
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        from .browser_probe import assert_clean, browser_check

        assert_clean(browser_check(report, tmp_path), 4)


def test_demo_runs_its_steps_with_the_same_commands_as_longctx(tmp_path: Path) -> None:
    """The demo's stage app (built without importing longctx.cli) knows every step's
    command, with the same options as ``longctx`` itself; unknown flags are DemoErrors."""
    import typer.main

    from longctx import demo
    from longctx.cli import app

    def options(group, words):
        cmd = group
        for w in words:
            cmd = cmd.commands[w]
        return sorted(o for p in cmd.params for o in p.opts)

    ours, theirs = typer.main.get_command(demo.stage_app()), typer.main.get_command(app)
    for step in _steps(tmp_path, DemoPlan.full()):
        words = step.argv[:1] if step.argv[0] == "train" else step.argv[:2]
        assert options(ours, words) == options(theirs, words), words
    with pytest.raises(demo.DemoError, match="no-such-flag"):
        demo.run_cli(["data", "stats", "--no-such-flag"])
