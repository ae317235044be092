"""CLI commands ``data demo-corpus`` and ``data stats`` (thin wrappers over data/ modules).

Both take typed flags, ``--config FILE`` (YAML with the same keys) and repeatable
``--set key=value``; precedence is defaults < YAML < flags typed on the command line < --set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from longctx.config import ConfigError, build_config, explicit_cli_values, parse_count
from longctx.plotting import label

MAX_PRINTED_DOMAINS = 30  # a corpus may have 30,000 domains; stats.json holds them all
CONFIG_HELP = "YAML file with the same keys as the flags (underscores), e.g. long_threshold: 2048."
SET_HELP = "Override one config key, KEY=VALUE (repeatable); wins over flags and --config."


@dataclass
class DemoCorpusConfig:
    """``longctx data demo-corpus`` settings."""

    out: str = ""
    max_mb: float = 12.0
    seed: int = 0
    num_files: Optional[int] = None  # noqa: UP045 - typer needs Optional on 3.10
    zstd_level: int = 3

    def validate(self) -> None:
        if not self.out:
            raise ConfigError("data demo-corpus: --out is required")
        if self.max_mb <= 0:
            raise ConfigError(f"max_mb must be positive, got {self.max_mb}")
        if self.num_files is not None and self.num_files < 1:
            raise ConfigError(f"num_files must be >= 1, got {self.num_files}")
        if not 1 <= self.zstd_level <= 22:
            raise ConfigError(f"zstd_level must be in 1..22, got {self.zstd_level}")


def demo_corpus_command(
    ctx: typer.Context,
    out: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads Optional
        typer.Option(
            "--out", help="Folder to write (train/chunk1/example_train_<i>.jsonl.zst + manifest.json)."
        ),
    ] = None,
    max_mb: Annotated[
        float,
        typer.Option(
            "--max-mb",
            help="Megabytes of text to write (12 ≈ 3.7M SmolLM2 tokens; 30 ≈ 8M). Small domains "
            "give all they have, large ones share the rest; beyond what the install holds, "
            "documents repeat.",
        ),
    ] = 12.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of selection and shuffling.")] = 0,
    num_files: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--num-files", help="Number of .jsonl.zst files (default: ~4 MB text each, ≥4)."),
    ] = None,
    zstd_level: Annotated[int, typer.Option("--zstd-level", help="zstd compression level.")] = 3,
    config: Annotated[Optional[Path], typer.Option("--config", help=CONFIG_HELP)] = None,  # noqa: UP045
    set_: Annotated[Optional[list[str]], typer.Option("--set", help=SET_HELP)] = None,  # noqa: UP045
) -> None:
    """Write the offline demo corpus: SlimPajama-layout jsonl.zst made from Python's own text.

    Domains: StdlibPackages (very long), StdlibModules and StdlibTests (long code),
    ReferenceManual and ReleaseNotes (medium prose), Docstrings (short). Deterministic for a
    given Python version, seed and size.
    """
    from longctx.data.demo_corpus import write_demo_corpus

    cli = explicit_cli_values(
        ctx,
        {
            "out": None if out is None else str(out),
            "max_mb": max_mb,
            "seed": seed,
            "num_files": num_files,
            "zstd_level": zstd_level,
        },
    )
    cfg = build_config(DemoCorpusConfig, config_file=config, cli=cli, overrides=set_ or ())
    m = write_demo_corpus(
        cfg.out,
        max_mb=cfg.max_mb,
        seed=cfg.seed,
        num_files=cfg.num_files,
        zstd_level=cfg.zstd_level,
    )
    typer.echo(
        f"demo corpus: {m['docs']:,} docs, {m['text_bytes'] / 1e6:.1f} MB of text, "
        f"{len(m['files'])} files, {len(m['domains'])} domains -> {cfg.out}"
    )
    for name, d in m["domains"].items():
        rep = f" ({d['repeated_docs']} repeated)" if d["repeated_docs"] else ""
        typer.echo(f"  {name:<16} {d['docs']:>6,} docs {d['bytes'] / 1e6:>7.2f} MB{rep}")


def stats_command(
    ctx: typer.Context,
    inputs: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(
            help="Corpus files, folders (recursive) or globs: jsonl, jsonl.gz, jsonl.zst, parquet."
        ),
    ] = None,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--out", help="Folder for stats.json, stats.png and manifest.json."),
    ] = None,
    tokenizer: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--tokenizer",
            help="Local tokenizer folder (tokenizer.json, tokenizer.model or an HF model dir); "
            "default: the embedded SmolLM2-135M tokenizer.",
        ),
    ] = None,
    sample_docs: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--sample-docs",
            help="Tokenize only about N documents (seeded by --seed), e.g. 20K; counts of docs, "
            "bytes and chars stay exact, token totals become estimates. Default: exact.",
        ),
    ] = None,
    long_threshold: Annotated[
        int,
        typer.Option("--long-threshold", help="Documents of at least this many tokens are long."),
    ] = 4096,
    workers: Annotated[int, typer.Option("--workers", help="Tokenizer worker processes.")] = 1,
    text_field: Annotated[
        str, typer.Option("--text-field", help="Dotted field of the text.")
    ] = "text",
    domain_field: Annotated[
        str,
        typer.Option(
            "--domain-field",
            help="Dotted field of the domain name (e.g. `source` for raw RedPajama CC rows), or "
            "@dir (folder name) or @file (file name) for corpora whose records name no source.",
        ),
    ] = "meta.redpajama_set_name",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the document sample.")] = 0,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Stop at the first bad record (error names file and line)."),
    ] = False,
    add_eos: Annotated[
        bool,
        typer.Option("--add-eos", help="Count an EOS per document (a BOS is always counted)."),
    ] = False,
    config: Annotated[Optional[Path], typer.Option("--config", help=CONFIG_HELP)] = None,  # noqa: UP045
    set_: Annotated[Optional[list[str]], typer.Option("--set", help=SET_HELP)] = None,  # noqa: UP045
) -> None:
    """Per-domain length statistics: docs, tokens, token share, length percentiles,
    long-token fraction (share of tokens in docs >= --long-threshold), chars per token,
    plus stats.png (domain token shares and token share by document length)."""
    from longctx.data.stats import StatsConfig, run_stats

    cli = explicit_cli_values(
        ctx,
        {
            "inputs": list(inputs) if inputs else None,
            "out": None if out is None else str(out),
            "tokenizer": tokenizer,
            "sample_docs": None
            if sample_docs is None
            else parse_count(sample_docs, name="--sample-docs"),
            "long_threshold": long_threshold,
            "workers": workers,
            "text_field": text_field,
            "domain_field": domain_field,
            "seed": seed,
            "strict": strict,
            "add_eos": add_eos,
        },
    )
    cfg = build_config(StatsConfig, config_file=config, cli=cli, overrides=set_ or ())
    s = run_stats(cfg)
    kind = f"sampled ({s.get('tokenized_docs', 0):,} docs tokenized)" if s["sampled"] else "exact"
    typer.echo(
        f"stats ({kind}): {s['total_docs']:,} docs, {s['total_tokens']:,} tokens, "
        f"{len(s['domains'])} domains -> {cfg.out}"
    )
    thr = s["long_threshold"]
    names = list(s["domains"])  # largest first
    for name in names[:MAX_PRINTED_DOMAINS]:
        d = s["domains"][name]
        typer.echo(
            f"  {label(name, 60):<24} share {d['token_share']:6.1%}  "
            f"p50 {d['length_percentiles']['p50']:>9,.0f}"
            f"  tokens in docs>={thr}: {d['long_token_fraction']:6.1%}"
        )
    if len(names) > MAX_PRINTED_DOMAINS:
        typer.echo(f"  … {len(names) - MAX_PRINTED_DOMAINS:,} smaller domains: see "
                   f"{Path(cfg.out) / 'stats.json'}")
    if s.get("skipped"):
        typer.echo("  skipped: " + ", ".join(f"{k}={v}" for k, v in s["skipped"].items()))
