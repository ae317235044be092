"""``longctx demo``: the step plan, and (slow) the quick demo end to end through the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from htmlparse import decode_png, parse

from longctx.report.demo import DemoPlan, _steps


def test_demo_plan_runs_every_stage_through_the_cli(tmp_path: Path) -> None:
    steps = _steps(tmp_path, DemoPlan.full())
    commands = [" ".join(s.argv[:2]) for s in steps]
    assert commands[:3] == ["data demo-corpus", "data stats", "data build"]
    assert [c.split()[0] for c in commands[3:]] == ["eval", "eval", "train", "eval", "eval"]
    build = steps[2].argv
    assert build[build.index("--strategy") + 1] == "per_source"
    train = steps[5].argv
    plan = DemoPlan.full()
    # continual pretraining with an enlarged RoPE base (SmolLM2-135M ships with 1e5)
    assert float(train[train.index("--rope-theta") + 1]) > 1e5
    # needle before and after on the same grid, reaching beyond the model's 8K context
    before, after = steps[3].argv, steps[6].argv
    assert before[before.index("--lengths") + 1] == after[after.index("--lengths") + 1]
    assert max(plan.needle_lengths) > 8192
    assert after[after.index("--model") + 1] == str(tmp_path / "train" / "final")


def test_demo_reports_a_missing_stage_by_name(tmp_path: Path, monkeypatch) -> None:
    """A stage that is not there (or fails) stops the demo with a message naming the step."""
    from longctx.report import demo

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
    for sub in ("corpus", "stats", "data", "needle-before", "train", "needle-after"):
        assert (out / sub / "manifest.json").is_file(), sub
    assert (out / "train" / "final" / "config.json").is_file()
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        from browser_probe import assert_clean, browser_check

        assert_clean(browser_check(report, tmp_path), 4)
