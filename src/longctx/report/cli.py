"""``longctx report``: one flag per ReportConfig field, ``--config FILE`` and ``--set``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from longctx.cliopts import opt, stage_command
from longctx.report.collect import ReportError
from longctx.report.html import write_report


@dataclass
class ReportConfig:
    """``longctx report`` settings."""

    run_dirs: list[str] = opt(
        factory=list, argument=True,
        help="Run directories (or single stage folders) to read; searched recursively for "
        "stats.json, data build / train manifest.json, metrics.jsonl, needle.json, loss.json "
        "and bookqa.json. With several, the first is the comparison baseline.")
    out: str = opt("report.html", "HTML file to write.", flags=("--out", "-o"))
    title: str = opt("longctx report", "Page title.")

    def validate(self) -> None:
        if not self.run_dirs:
            raise ReportError("report: give at least one run directory (RUN_DIRS...)")


def _report(cfg: ReportConfig) -> None:
    """Write one self-contained HTML report (embedded PNGs, no external references) from
    stage outputs: data statistics before/after mixing, training curve and config, needle
    heatmaps, loss tables, and a side-by-side comparison of several runs (Table 5 view)."""
    images = write_report([Path(d) for d in cfg.run_dirs], Path(cfg.out), cfg.title)
    typer.echo(f"report: {cfg.out} ({images} images)")


report_command = stage_command(ReportConfig, _report)
