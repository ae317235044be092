"""``longctx report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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


def report_command(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Run directories (or single stage folders) to read; searched recursively for "
            "stats.json, data build / train manifest.json, metrics.jsonl, needle.json, "
            "loss.json and bookqa.json. With several, the first is the comparison baseline.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="HTML file to write.")
    ] = Path("report.html"),
    title: Annotated[str, typer.Option("--title", help="Page title.")] = "longctx report",
) -> None:
    """Write one self-contained HTML report (embedded PNGs, no external references) from
    stage outputs: data statistics before/after mixing, training curve and config, needle
    heatmaps, loss tables, and a side-by-side comparison of several runs (Table 5 view)."""
    images = write_report(run_dirs, out, title)
    typer.echo(f"report: {out} ({images} images)")
