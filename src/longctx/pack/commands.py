"""CLI commands ``data build`` and ``data export`` (thin wrappers over mix/ and pack/ modules)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from longctx.cliopts import flag_command, opt, param, stage_command
from longctx.pack.buildplan import BuildConfig


def _summary(manifest: dict[str, Any]) -> str:
    lines = [
        f"{manifest['num_sequences']} rows x {manifest['seq_len']} = {manifest['tokens_total']:,} "
        f"tokens ({manifest['strategy']}), {len(manifest['shards'])} shard(s)"
    ]
    for d, v in manifest["domains"].items():
        target = v.get("target_share")
        t = f"target {target:.3f}" if target is not None else "no target"
        lines.append(
            f"  {d:<24} share {v['share']:.3f} ({t})  long-token share "
            f"{v['long_token_fraction']:.3f} (rule predicts {v['predicted_long_token_fraction']:.3f})"
        )
    if manifest.get("skipped"):
        lines.append(f"  skipped records: {manifest['skipped']}")
    for w in manifest.get("warnings", []):
        lines.append(f"  warning: {w}")
    held = manifest.get("heldout")
    if held:
        lines.append(
            f"  held out: {held['documents_held_out']} documents (fraction {held['fraction']}); "
            f"{held['documents']} packed into {held['path']}/ ({held['tokens']:,} tokens, "
            f"{held['padding_tokens']:,} padding)"
        )
    files = manifest.get("input_files", {})
    if files.get("subset"):
        lines.append(f"  read {files['read']} of {files['total']} input files (seeded subset)")
    return "\n".join(lines)


def _build(cfg: BuildConfig, progress: bool | None) -> None:
    """Build a packed long-context mixture: select documents by strategy and exact per-domain
    token budgets, pack them into rows of --seq-len tokens, write Arrow shards + manifest.json.

    Example (the paper's per-source length upsampling):
    longctx data build CORPUS/ --out data/ps --strategy per_source --tokens 100M --seq-len 65536

    On Slurm (CORPUS/ and --out on a filesystem every node shares; same output):
    longctx data build CORPUS/ --out data/ps --tokens 5B --executor slurm --slurm-partition cpu
    """
    from longctx.pack.build import run_build

    manifest = run_build(cfg, progress=progress)
    if manifest.get("skipped_rerun"):
        typer.echo(f"{cfg.out}: already built with the same config (hash {manifest['config_hash']})")
        return
    typer.echo(_summary(manifest))
    typer.echo(f"wrote {cfg.out}/manifest.json")


build_command = stage_command(
    BuildConfig, _build, config_flags=("--config", "-c"),
    config_help="YAML file with any of these keys.",
    set_help="Override a config key: --set short_keep=0.2 (repeatable).",
    tail=[param("progress", bool | None, typer.Option(
        None, "--progress/--no-progress", help="Progress bars (default: on a TTY)."))],
)


@dataclass
class ExportConfig:
    """``longctx data export`` settings: flags only (no YAML: four settings, one run)."""

    data_dir: Path | None = opt(None, "A folder written by `longctx data build`.",
                                argument=True, required=True)
    out: Path | None = opt(None, "Output folder.", flags=("--out", "-o"), required=True)
    format: str = opt("paper", "paper: parquet in the schema of the paper's released dataset "
                      "(input_ids, labels = first token of the next row, source spans); "
                      "jsonl: the same as JSONL.", flags=("--format", "-f"))
    force: bool = opt(False, "Rewrite even if a finished export matches.", flags=("--force",))


def _export(cfg: ExportConfig) -> None:
    """Export packed shards in the paper's released-dataset schema (parquet) or as JSONL."""
    from longctx.pack.export import run_export

    m = run_export(cfg.data_dir, cfg.out, cfg.format, force=cfg.force)
    typer.echo(f"{m['num_sequences']} rows -> {cfg.out} ({m['format']}, {len(m['files'])} file(s))")


export_command = flag_command(ExportConfig, _export)
