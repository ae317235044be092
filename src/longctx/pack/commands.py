"""CLI commands ``data build`` and ``data export`` (thin wrappers over mix/ and pack/ modules)."""
# ruff: noqa: B008  (typer declares options as argument defaults)

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from longctx.config import build_config, explicit_cli_values, parse_weights


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


def build_command(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(
        None, help="Corpus files, folders or globs (jsonl, jsonl.gz, jsonl.zst, parquet)."
    ),
    out: str = typer.Option(None, "--out", "-o", help="Output folder for shards and manifest.json."),
    tokenizer: str = typer.Option(
        None, help="Folder with tokenizer.json (an HF model folder works); default: embedded SmolLM2."
    ),
    strategy: str = typer.Option(
        "per_source", help="cut | original | per_source | global | upsample (see the paper, Fig. 2)."
    ),
    tokens: str = typer.Option(
        None, help="Output tokens, e.g. 600K, 100M, 5B; rounded up to whole rows of --seq-len."
    ),
    seq_len: int = typer.Option(8192, help="Tokens per packed row."),
    long_threshold: int = typer.Option(
        4096, help="A document with at least this many tokens is long."
    ),
    short_keep: float = typer.Option(
        0.1, help="Probability of keeping a short document (per_source, global, upsample)."
    ),
    mix: str = typer.Option(
        None, help="Target domain weights DOMAIN=W,... (default: measured input token shares)."
    ),
    upsample: str = typer.Option(
        None, help="Multiply domain weights DOMAIN=K,... then renormalise (strategy upsample)."
    ),
    text_field: str = typer.Option("text", help="Dotted path of the text in a record."),
    domain_field: str = typer.Option(
        "meta.redpajama_set_name", help="Dotted path of the domain name in a record."
    ),
    seed: int = typer.Option(42, help="Seed of every random choice (keep draws, order, files)."),
    workers: int = typer.Option(1, help="Worker processes (output is identical for any count)."),
    strict: bool = typer.Option(
        False, "--strict", help="Stop at the first bad record, or when a domain would repeat."
    ),
    bos: bool = typer.Option(True, "--bos/--no-bos", help="BOS token before every document."),
    eos: bool = typer.Option(False, "--eos/--no-eos", help="EOS token after every document."),
    shard_rows: int = typer.Option(0, help="Rows per shard (0: about 256 MB per shard)."),
    subset: bool = typer.Option(
        True, "--subset/--read-all",
        help="Read only a seeded subset of files that covers the budgets (with --margin).",
    ),
    margin: float = typer.Option(1.2, help="The subset holds margin x each budget in eligible tokens."),
    min_files: int = typer.Option(
        4, help="The subset reads at least this many files (and until no new domain shows up "
        "in the second half of the files read)."
    ),
    eval_tokens: str = typer.Option(
        None, help="Hold out documents for evaluation and pack up to this many of their tokens "
        "per domain into OUT/heldout (e.g. 200K); held-out documents are in no training row."
    ),
    eval_fraction: float = typer.Option(
        0.05, help="Fraction of documents held out (by a seeded hash of their text)."
    ),
    eval_seq_len: int = typer.Option(0, help="Held-out row length (0: --seq-len)."),
    eval_seed: int = typer.Option(
        0, help="Seed of the held-out split (apart from --seed, so repeats share one split)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Rebuild even if a finished build matches; take over a folder "
        "holding files longctx did not write (nothing there is deleted)."
    ),
    config: Path = typer.Option(None, "--config", "-c", help="YAML file with any of these keys."),
    set_: list[str] = typer.Option(
        None, "--set", help="Override a config key: --set short_keep=0.2 (repeatable)."
    ),
    progress: bool = typer.Option(None, "--progress/--no-progress", help="Progress bars (default: on a TTY)."),
) -> None:
    """Build a packed long-context mixture: select documents by strategy and exact per-domain
    token budgets, pack them into rows of --seq-len tokens, write Arrow shards + manifest.json.

    Example (the paper's per-source length upsampling):
    longctx data build CORPUS/ --out data/ps --strategy per_source --tokens 100M --seq-len 65536
    """
    from longctx.pack.build import BuildConfig, run_build

    values = {
        "inputs": inputs, "out": out, "tokenizer": tokenizer, "strategy": strategy,
        "tokens": tokens, "seq_len": seq_len, "long_threshold": long_threshold,
        "short_keep": short_keep, "mix": parse_weights(mix, name="--mix") if mix else mix,
        "upsample": parse_weights(upsample, name="--upsample") if upsample else upsample,
        "text_field": text_field, "domain_field": domain_field, "seed": seed,
        "workers": workers, "strict": strict, "bos": bos, "eos": eos, "shard_rows": shard_rows,
        "subset": subset, "margin": margin, "min_files": min_files, "force": force,
        "eval_tokens": eval_tokens, "eval_fraction": eval_fraction, "eval_seq_len": eval_seq_len,
        "eval_seed": eval_seed,
    }
    cli = explicit_cli_values(ctx, values)
    cfg = build_config(BuildConfig, config_file=config, cli=cli, overrides=set_ or [])
    manifest = run_build(cfg, progress=progress)
    if manifest.get("skipped_rerun"):
        typer.echo(f"{cfg.out}: already built with the same config (hash {manifest['config_hash']})")
        return
    typer.echo(_summary(manifest))
    typer.echo(f"wrote {cfg.out}/manifest.json")


def export_command(
    data_dir: Path = typer.Argument(..., help="A folder written by `longctx data build`."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    format: str = typer.Option(
        "paper", "--format", "-f",
        help="paper: parquet in the schema of the paper's released dataset "
        "(input_ids, labels = first token of the next row, source spans); jsonl: the same as JSONL.",
    ),
    force: bool = typer.Option(False, "--force", help="Rewrite even if a finished export matches."),
) -> None:
    """Export packed shards in the paper's released-dataset schema (parquet) or as JSONL."""
    from longctx.pack.export import run_export

    m = run_export(data_dir, out, format, force=force)
    typer.echo(f"{m['num_sequences']} rows -> {out} ({m['format']}, {len(m['files'])} file(s))")
