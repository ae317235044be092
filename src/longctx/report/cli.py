"""``longctx report``: one flag per ReportConfig field, ``--config FILE`` and ``--set``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from longctx.cliopts import opt, stage_command
from longctx.report.collect import ReportError


def write_report(run_dirs: list[Path], out: Path, title: str = "longctx report") -> int:
    """Collect stage outputs under ``run_dirs`` and write one HTML page; returns image count."""
    from longctx.report.collect import collect
    from longctx.report.html import render_report

    runs = collect(list(run_dirs))
    doc, images = render_report(runs, title=title)
    if out.exists() and out.is_dir():
        raise ReportError(f"--out {out} is a directory; give a file name such as report.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(out)
    return images


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
