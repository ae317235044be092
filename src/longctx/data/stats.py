"""Per-domain length statistics of a corpus (``longctx data stats``) and their plot.

For every domain: documents, tokens, token share, length percentiles, the share of tokens
that sit in documents of at least ``long_threshold`` tokens (what per-source upsampling
raises; paper §3, Fig. 2) and characters per token. Exact by default.

With ``sample_docs`` only a seeded sample of documents is tokenized. Document, byte and
character counts stay exact. The sample calibrates each domain's characters per token, and
every document's character length (kept as a 2%-bin histogram) is converted with it: token
totals, long-token fractions and tail percentiles are then estimates over *all* documents
(p10-p90 come from the sampled documents' real token counts when there are enough). (A
plain sample misses the few long documents that hold most of a domain's tokens: on the
RedPajama sample, 260 of 536 docs put GitHub's long-token fraction at 0.10 against 0.69.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longctx.cliopts import count_flag, opt
from longctx.config import ConfigError
from longctx.data.lengths import LengthScan, file_keys, scan_lengths
from longctx.data.readers import Fields, expand_inputs
from longctx.data.tokenizer import specials_per_doc
from longctx.mix.strategies import is_long

STAGE = "data.stats"
PERCENTILES = (10, 25, 50, 75, 90, 99)
# The paper's code estimated lengths before tokenizing as characters / 3.68 (FACTS.md).
PAPER_CHARS_PER_TOKEN = 3.68
# Sampled scans take p10-p90 from the sample when a domain has at least this many sampled docs.
MIN_SAMPLE_FOR_PERCENTILES = 50
# Edges of the length bins of the "token share by document length" panel (tokens).
LENGTH_BIN_EDGES = (0, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


@dataclass
class StatsConfig:
    """``longctx data stats`` settings (flags, YAML keys and ``--set`` names are the same)."""

    inputs: list[str] = opt(factory=list, argument=True, help="Corpus files, folders "
                            "(recursive) or globs: jsonl, jsonl.gz, jsonl.zst, parquet.")
    out: str = opt("", "Folder for stats.json, stats.png and manifest.json.")
    tokenizer: str | None = opt(None, "Local tokenizer folder (tokenizer.json, tokenizer.model or "
                                "an HF model dir); default: the embedded SmolLM2-135M tokenizer.")
    sample_docs: int | None = opt(
        None, "Tokenize only about N documents (seeded by --seed), e.g. 20K; counts of docs, "
        "bytes and chars stay exact, token totals become estimates. Default: exact.",
        cli_type=str, parse=count_flag)
    long_threshold: int = opt(4096, "Documents of at least this many tokens are long.")
    workers: int = opt(1, "Tokenizer worker processes.")
    text_field: str = opt("text", "Dotted field of the text.")
    domain_field: str = opt("meta.redpajama_set_name", "Dotted field of the domain name (e.g. "
                            "`source` for raw RedPajama CC rows), or @dir (folder name) or @file "
                            "(file name) for corpora whose records name no source.")
    seed: int = opt(0, "Seed of the document sample.")
    strict: bool = opt(False, "Stop at the first bad record (error names file and line).",
                       flags=("--strict",))
    add_bos: bool = opt(True, "Count a BOS per document.")
    add_eos: bool = opt(False, "Count an EOS per document.", flags=("--add-eos",))
    plot: bool = opt(True, "Draw stats.png.")

    def validate(self) -> None:
        if not self.inputs:
            raise ConfigError("data stats: give at least one INPUT (file, folder or glob)")
        if not self.out:
            raise ConfigError("data stats: --out is required")
        if self.long_threshold <= 0:
            raise ConfigError(f"long_threshold must be positive, got {self.long_threshold}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.sample_docs is not None and self.sample_docs <= 0:
            raise ConfigError(f"sample_docs must be positive, got {self.sample_docs}")


def length_percentiles(lengths: np.ndarray) -> dict[str, float]:
    """p10…p99 (numpy's linear interpolation) and max of document lengths in tokens."""
    if lengths.size == 0:
        return {**{f"p{q}": 0.0 for q in PERCENTILES}, "max": 0}
    values = np.percentile(lengths, PERCENTILES)
    out: dict[str, Any] = {f"p{q}": float(v) for q, v in zip(PERCENTILES, values, strict=True)}
    out["max"] = int(lengths.max())
    return out


def long_token_fraction(lengths: np.ndarray, threshold: int) -> float:
    """Share of all tokens that belong to documents of at least ``threshold`` tokens."""
    total = int(lengths.sum())
    return float(lengths[is_long(lengths, threshold)].sum() / total) if total else 0.0


def length_bin(lengths: np.ndarray, edges: tuple[int, ...] = LENGTH_BIN_EDGES) -> np.ndarray:
    """The bin of each length: i where edges[i] <= length < edges[i + 1] (the last is open)."""
    return np.searchsorted(np.asarray(edges[1:]), lengths, side="right")


def _exact_domains(scan: LengthScan, threshold: int) -> list[dict[str, Any]]:
    """Every domain's exact statistics at once (bincounts and one sort, not one pass per
    domain: a corpus may have 30,000 domains), in ``scan.domains`` order."""
    n = len(scan.domains)
    code = scan.domain.astype(np.int64)
    tok = scan.tokens.astype(np.float64)
    long = is_long(scan.tokens, threshold)
    paper_long = is_long(scan.chars / PAPER_CHARS_PER_TOKEN, threshold)

    def per(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(code, weights=weights, minlength=n)

    tokens, counts, chars = per(tok), per(), per(scan.chars.astype(np.float64))
    long_tok, paper_tok = per(tok * long), per(tok * paper_long)
    long_docs, paper_docs = per(long.astype(np.float64)), per(paper_long.astype(np.float64))
    nb = len(LENGTH_BIN_EDGES)
    bins = np.bincount(code * nb + length_bin(scan.tokens),
                       weights=tok, minlength=n * nb).reshape(n, nb)
    pct = _grouped_percentiles(code, scan.tokens, counts.astype(np.int64))
    empty = {"docs": 0, "bytes": 0, "chars": 0}
    out = []
    for i, name in enumerate(scan.domains):
        totals = scan.totals.get(name, empty)
        t = int(tokens[i])
        out.append({
            "docs": int(totals["docs"]),
            "tokens": t,
            "token_share": 0.0,
            "long_token_fraction": float(long_tok[i] / t) if t else 0.0,
            # What the paper's chars/3.68 rule would call long, measured in real tokens.
            "long_token_fraction_chars_estimate": float(paper_tok[i] / t) if t else 0.0,
            "long_docs": int(long_docs[i]),
            "long_docs_chars_estimate": int(paper_docs[i]),
            "chars_per_token": int(chars[i]) / t if t else 0.0,
            "length_percentiles": pct[i],
            "mean_tokens": t / int(counts[i]) if counts[i] else 0.0,
            "bytes": int(totals["bytes"]),
            "chars": int(totals["chars"]),
            "length_bins": [float(x) for x in bins[i] / t] if t else [0.0] * nb,
        })
    return out


def _grouped_percentiles(code: np.ndarray, lengths: np.ndarray, counts: np.ndarray) -> list[dict]:
    """:func:`length_percentiles` of every domain at once (numpy's linear method)."""
    order = np.lexsort((lengths, code))
    srt = lengths[order].astype(np.float64)
    start = np.cumsum(counts) - counts
    last = np.maximum(counts - 1, 0)
    cols: dict[str, np.ndarray] = {}
    for q in PERCENTILES:
        virtual = (q / 100) * last
        lo = np.floor(virtual).astype(np.int64)
        hi = np.minimum(lo + 1, last)
        gamma = virtual - lo
        a = srt[np.minimum(start + lo, len(srt) - 1)] if len(srt) else np.zeros(len(counts))
        b = srt[np.minimum(start + hi, len(srt) - 1)] if len(srt) else np.zeros(len(counts))
        cols[f"p{q}"] = np.where(counts > 0, a + (b - a) * gamma, 0.0)
    top = srt[np.minimum(start + last, len(srt) - 1)] if len(srt) else np.zeros(len(counts))
    cols["max"] = np.where(counts > 0, top, 0)
    return [
        {**{f"p{q}": float(cols[f"p{q}"][i]) for q in PERCENTILES}, "max": int(cols["max"][i])}
        for i in range(len(counts))
    ]


def _hist_percentiles(rep: np.ndarray, counts: np.ndarray, max_len: float) -> dict[str, Any]:
    """Percentiles of a binned length distribution (each bin at its mean length)."""
    cum = np.cumsum(counts)
    n = int(cum[-1])
    out: dict[str, Any] = {}
    for q in PERCENTILES:
        rank = q / 100 * (n - 1)
        out[f"p{q}"] = float(rep[int(np.searchsorted(cum, rank, side="right"))])
    out["max"] = int(round(max_len))
    return out


def _sampled_domain(
    lengths: np.ndarray,
    chars: np.ndarray,
    totals: dict[str, int],
    hist: tuple[np.ndarray, np.ndarray],
    threshold: int,
    specials: int,
    fallback_ratio: float,
) -> dict[str, Any]:
    """Estimates for a sampled scan: the sample calibrates characters per token of the domain
    (r); every document's character length (binned) is then converted with it, so the tail
    (long-token fraction, p99, max) sees every document, not only the few sampled."""
    content = int(lengths.sum()) - specials * int(lengths.size)
    d: dict[str, Any] = {}
    if lengths.size and content > 0:
        r = int(chars.sum()) / content
    else:
        r = fallback_ratio
        d["estimated_from"] = "corpus-wide chars per token (no sampled document)"
    counts, sums = hist
    keep = counts > 0
    counts, sums = counts[keep], sums[keep]
    rep = sums / counts / r + specials  # a bin's documents at their mean length, in tokens
    bin_tokens = sums / r + specials * counts
    total = float(bin_tokens.sum())
    long = is_long(rep, threshold)
    paper_long = is_long(sums / counts / PAPER_CHARS_PER_TOKEN, threshold)
    tokens = int(round(totals["chars"] / r + specials * totals["docs"]))
    percentiles = _hist_percentiles(rep, counts, totals.get("max_chars", 0) / r + specials)
    if lengths.size >= MIN_SAMPLE_FOR_PERCENTILES:
        # The bulk from real token counts (a domain's chars per token varies by document);
        # the tail (p99, max) from every document, which a sample rarely reaches.
        sample = length_percentiles(lengths)
        percentiles.update({f"p{q}": sample[f"p{q}"] for q in PERCENTILES if q < 99})
        d["percentiles_from"] = "sample (p10-p90); all documents via characters (p99, max)"
    else:
        d["percentiles_from"] = "all documents via characters"
    by_len = np.bincount(length_bin(rep), weights=bin_tokens, minlength=len(LENGTH_BIN_EDGES))
    d.update(
        {
            "docs": int(totals["docs"]),
            "tokens": tokens,
            "token_share": 0.0,
            "long_token_fraction": float(bin_tokens[long].sum() / total) if total else 0.0,
            "long_token_fraction_chars_estimate": float(bin_tokens[paper_long].sum() / total)
            if total
            else 0.0,
            "chars_per_token": totals["chars"] / tokens if tokens else 0.0,
            "length_percentiles": percentiles,
            "mean_tokens": tokens / totals["docs"] if totals["docs"] else 0.0,
            "bytes": int(totals["bytes"]),
            "chars": int(totals["chars"]),
            "length_bins": [float(x) for x in by_len / total] if total else [0.0] * len(by_len),
            "tokens_estimated": True,
            "sampled_docs": int(lengths.size),
            "sample_length_percentiles": length_percentiles(lengths),
        }
    )
    return d


def _rows_by_domain(codes: np.ndarray, n: int) -> list[np.ndarray]:
    """Row indices of each domain's documents: one sort for all domains, not one pass per
    domain (30,000 domains x millions of documents would be quadratic)."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n)]


def compute_stats(scan: LengthScan, long_threshold: int = 4096) -> dict[str, Any]:
    """The ``stats.json`` content of a scan (pure: no I/O)."""
    sampled = scan.sampled
    tk = scan.tokenizer or {}
    specials = specials_per_doc(
        tk.get("bos_id"), tk.get("eos_id"), bool(tk.get("add_bos")), bool(tk.get("add_eos"))
    )
    content_all = int(scan.tokens.sum()) - specials * scan.num_docs
    fallback = int(scan.chars.sum()) / content_all if content_all > 0 else PAPER_CHARS_PER_TOKEN
    empty = {"docs": 0, "bytes": 0, "chars": 0, "max_chars": 0}
    domains: dict[str, dict[str, Any]] = {}
    if sampled:
        rows = _rows_by_domain(scan.domain, len(scan.domains))
        for name, m in zip(scan.domains, rows, strict=True):
            totals = scan.totals.get(name, empty)
            hist = scan.char_hist.get(name) or (np.zeros(1, np.int64), np.zeros(1))
            domains[name] = _sampled_domain(
                scan.tokens[m], scan.chars[m], totals, hist, long_threshold, specials, fallback
            )
    else:
        domains = dict(zip(scan.domains, _exact_domains(scan, long_threshold), strict=True))
    total = sum(d["tokens"] for d in domains.values())
    for d in domains.values():
        d["token_share"] = d["tokens"] / total if total else 0.0
    order = sorted(domains, key=lambda n: (-domains[n]["tokens"], n))
    docs = sum(t["docs"] for t in scan.totals.values())
    overall: dict[str, Any] = {
        "docs": docs,
        "tokens": total,
        "bytes": sum(t["bytes"] for t in scan.totals.values()),
        "chars": sum(t["chars"] for t in scan.totals.values()),
        "long_token_fraction": sum(d["long_token_fraction"] * d["tokens"] for d in domains.values())
        / total
        if total
        else 0.0,
    }
    if not sampled:
        overall["length_percentiles"] = length_percentiles(scan.tokens)
    return {
        "stage": STAGE,
        "long_threshold": int(long_threshold),
        "sampled": bool(sampled),
        "sample_rate": scan.sample_rate,
        "total_tokens": int(total),
        "total_docs": int(docs),
        "domains": {n: domains[n] for n in order},
        "overall": overall,
        "length_bin_edges": list(LENGTH_BIN_EDGES),
        "skipped": dict(sorted(scan.skipped.items())),
        "tokenizer": scan.tokenizer,
    }


def plot_stats(stats: dict[str, Any], path: str | Path, dpi: int = 100) -> Path:
    """The paper's Fig. 2 view as a PNG (:func:`longctx.plotting.stats_figure`, the figure the
    report redraws with): 1300×460 px at dpi 100, taller past 14 domains."""
    from longctx.plotting import save_png, stats_figure

    return save_png(stats_figure(stats, dpi=dpi), path, dpi=dpi)


def run_stats(cfg: StatsConfig, progress: bool = True) -> dict[str, Any]:
    """Scan, compute and write ``stats.json`` + ``stats.png`` + ``manifest.json`` into cfg.out.

    Skipped when the folder already holds a finished run of the same config and inputs.
    """
    from longctx.config import to_dict
    from longctx.data.identity import files_identity
    from longctx.data.tokenizer import load_tokenizer
    from longctx.stage import (
        Timer,
        claimed_stage,
        config_hash,
        is_done,
        read_manifest,
        sha256_file,
        write_json_atomic,
        write_manifest,
    )

    out = Path(cfg.out)
    files = expand_inputs(cfg.inputs)
    tok = load_tokenizer(cfg.tokenizer, add_bos=cfg.add_bos, add_eos=cfg.add_eos)
    config = to_dict(cfg)
    identity = {
        "config": {k: v for k, v in config.items() if k not in ("out", "workers", "plot")},
        "files": files_identity(files, file_keys(files)),  # size, mtime, ctime: see identity.py
        "tokenizer": tok.fingerprint,
    }
    chash = config_hash(identity)
    if is_done(out, chash) and (out / "stats.json").is_file():
        return read_manifest(out) or {}
    with claimed_stage(out, STAGE, chash, inputs=cfg.inputs), Timer() as timer:
        scan = scan_lengths(
            files,
            tok,
            Fields(text=cfg.text_field, domain=cfg.domain_field),
            workers=cfg.workers,
            sample_docs=cfg.sample_docs,
            seed=cfg.seed,
            strict=cfg.strict,
            progress=progress,
        )
        stats = compute_stats(scan, cfg.long_threshold)
        stats["sample_docs"] = cfg.sample_docs
        stats["tokenized_docs"] = scan.num_docs
        stats["files"] = len(files)
        stats["fields"] = {"text": cfg.text_field, "domain": cfg.domain_field}
        stats["seed"] = cfg.seed
        write_json_atomic(out / "stats.json", stats)
        outputs = {"stats.json": sha256_file(out / "stats.json")}
        if cfg.plot and stats["domains"]:
            plot_stats(stats, out / "stats.png")
            outputs["stats.png"] = sha256_file(out / "stats.png")
    manifest = {
        **stats,
        "status": "done",
        "config": config,
        "config_hash": chash,
        "inputs": [str(f) for f in files],
        "outputs": outputs,
        "seconds": round(timer.wall, 3),
        "cpu_seconds": round(timer.cpu, 3),
        "tokenized_tokens": int(scan.tokens.sum()),
    }
    write_manifest(out, manifest)
    return manifest
