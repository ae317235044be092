"""``longctx ablate --config FILE.yaml --out DIR [--set key=value ...]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def ablate_command(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Ablation YAML (see configs/ablate-*.yaml).")
    ],
    out: Annotated[
        str | None,
        typer.Option("--out", "-o", help="Output folder (arms/, ablation.json, report.html)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key, e.g. --set build.tokens=2M, "
                     "--set arms.book_up.upsample.RedPajamaBook=5, --set seeds=3 (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the config and print the plan; run nothing.")
    ] = False,
    print_commands: Annotated[
        bool,
        typer.Option("--print-commands", help="Write every stage's config next to its folder "
                     "and print one command per stage (for cluster jobs); run nothing."),
    ] = False,
    nproc: Annotated[
        int, typer.Option("--nproc", min=1, help="GPUs per training job in --print-commands "
                          "(torchrun --nproc-per-node).")
    ] = 8,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Stage progress bars (default: off)."),
    ] = None,
) -> None:
    """Compare data mixtures the way the paper's Table 5 does: every arm (a mixture) is built,
    trained and evaluated with everything else identical, each seed repeated to measure the
    noise. Writes DIR/ablation.json (per arm and seed, mean and spread over seeds, one
    verdict per arm against the first) and DIR/report.html. Finished stages are reused, so
    an interrupted run resumes where it stopped."""
    from longctx.ablate.config import load_ablation_config
    from longctx.ablate.run import plan_units, run_ablation

    cfg = load_ablation_config(config, out=out, overrides=set_ or [])
    if print_commands:
        from longctx.ablate.commands import stage_commands

        for line in stage_commands(cfg, nproc=nproc):
            typer.echo(line)
        return
    if dry_run:
        for unit in plan_units(cfg):
            arm = unit.arm
            extra = {**arm.build, **arm.train}
            also = f" (differs: {extra})" if extra else ""
            typer.echo(f"{unit.label}: {arm.mixture()}{also} -> {unit.root}")
        typer.echo(f"config OK: {len(cfg.arms)} arm(s) x {len(cfg.seed_list())} seed(s)")
        return
    run_ablation(cfg, echo=lambda s: typer.echo(s), progress=bool(progress))
