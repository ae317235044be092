"""``longctx report`` and ``longctx demo``."""

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


def demo_command(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for every stage's output and the report.")
    ] = Path("runs/demo"),
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="Tiny grid, short sequences and 2 training steps (a few minutes, CI)."
        ),
    ] = False,
    steps: Annotated[
        int | None,
        typer.Option("--steps", min=1, help="Training steps (default 2, of one 10,240-token row each; --quick: 2 of 1,024)."),
    ] = None,
    rope_theta: Annotated[
        float | None,
        typer.Option(
            "--rope-theta",
            min=1.0,
            help="RoPE base for continual pretraining (default 1e6; SmolLM2-135M has 1e5).",
        ),
    ] = None,
) -> None:
    """Run the whole pipeline offline on embedded defaults (demo corpus, SmolLM2-135M):
    corpus -> statistics -> per-source length-upsampled mixture -> needle before training ->
    continual pretraining with an enlarged RoPE base -> needle and loss after -> report.
    Stages that already finished in --out are reused."""
    from longctx.report.demo import DemoPlan, run_demo

    plan = DemoPlan.quick() if quick else DemoPlan.full()
    if steps is not None:
        plan.steps = steps
    if rope_theta is not None:
        plan.rope_theta = rope_theta
    run_demo(out, plan)
