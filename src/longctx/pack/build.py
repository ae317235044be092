"""``data build``: corpus -> eligible documents -> exact-budget selection -> packed shards.

Steps (each one deterministic from the config and the seed; the config, files and tasks
are settled first, in :mod:`longctx.pack.buildplan`):

1. Resolve inputs into files; give every file a stable id (its path relative to the common
   folder) and every document the id ``<file id>:<line>``.
2. Pass 1 indexes files in a seeded order (:mod:`longctx.pack.index` in worker processes,
   results consumed in order): every document's draws, bytes and domain, no tokenizer but a
   small sample. With ``subset`` on, indexing stops once every budget group's candidates
   hold ``margin`` x its budget in estimated eligible tokens. Pass 2 tokenizes in rounds
   (:mod:`longctx.pack.scan`) only the candidates inside each group's priority cut-off
   (:mod:`longctx.mix.cutoff`), extending it until the real eligible tokens inside meet the
   budget: selection then equals tokenizing every document of the files indexed. Both
   passes are run by :mod:`longctx.pack.passes`. Every file's index and every round's scan
   is spilled to ``OUT/.work`` with a marker, so an interrupted build that is rerun reuses
   it; every decision depends only on per-file results consumed in order, never on worker
   count or timing. A file over ``split_bytes`` is indexed and tokenized in byte ranges
   (:mod:`longctx.pack.parts`), merged back into the file's results. The tasks run in a
   local worker pool (``executor`` pool) or on a datatrove executor or Ray
   (:mod:`longctx.pack.executors`), with identical output.
3. Target shares (measured input token shares unless ``--mix``; ``--upsample`` multiplies)
   become exact integer budgets; :mod:`longctx.mix.select` picks pieces to fill them.
4. :mod:`longctx.pack.packer` concatenates pieces into rows; shards and ``manifest.json``
   are written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longctx.config import parse_count
from longctx.data.workers import prestart, stop_forkserver
from longctx.mix.select import (
    Eligible,
    Selection,
    check_budgets,
    check_output_size,
    select_pieces,
)
from longctx.mix.strategies import (
    GLOBAL_GROUP,
    expected_global_shares,
    is_long,
    plan_budgets,
    predicted_long_fraction,
)
from longctx.pack.buildplan import (
    TOKENIZER_CACHE,
    BuildConfig,
    BuildError,
    ScanPlan,
    fail_hook,
    open_work_dir,
    plan_scan,
)
from longctx.pack.packer import Piece, pack_rows
from longctx.pack.passes import STEPS, ScanResult, needed_tokens, scan_inputs
from longctx.pack.shards import FORMAT_VERSION, ShardWriter
from longctx.pack.spill import SpillReader
from longctx.progress import progress_bar
from longctx.stage import Timer, config_hash, is_done, read_manifest, stage_output, write_manifest

STAGE = "data.build"
SHARD_BYTES = 256 << 20
HELDOUT_DIR = "heldout"
HELDOUT_STAGE = "data.heldout"


def run_build(cfg: BuildConfig, *, progress: bool | None = None) -> dict[str, Any]:
    """Build the packed mixture described by ``cfg``; return its manifest."""
    timer = Timer().__enter__()
    if cfg.workers > 1 and cfg.executor == "pool":  # one fork server for all its pools
        from longctx.data.tokenizer import resolve_tokenizer_dir

        prestart(STEPS, resolve_tokenizer_dir(cfg.tokenizer)[1] / "tokenizer.json")
    try:
        with stage_output(cfg.out or "", STAGE, force=cfg.force, inputs=cfg.inputs):
            return _build(cfg, progress, timer)
    finally:
        stop_forkserver()


def _build(cfg: BuildConfig, progress: bool | None, timer: Timer) -> dict[str, Any]:
    plan = plan_scan(cfg)
    out = plan.out
    check_output_size(plan.rows, cfg.seq_len, np.dtype(plan.tok.dtype).itemsize,
                      free_disk=shutil.disk_usage(out if out.exists() else out.parent
                                                  if out.parent.exists() else ".").free,
                      memory=_physical_memory())
    before = read_manifest(out)
    if not cfg.force and is_done(out, plan.cfg_hash) and _outputs_intact(out, before or {}):
        manifest = dict(before or {})
        manifest["skipped_rerun"] = True
        shutil.rmtree(out / TOKENIZER_CACHE, ignore_errors=True)
        return manifest
    # Only a folder whose manifest is this stage's holds shards and work files of ours;
    # in a folder taken over with --force nothing that was there is deleted.
    owned = before is not None and before.get("stage") == STAGE
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, {"stage": STAGE, "status": "running", "format_version": FORMAT_VERSION,
                         "config": plan.out_cfg, "config_hash": plan.cfg_hash})
    open_work_dir(plan)
    with progress_bar(progress) as bar:
        scan = scan_inputs(plan, bar)
        chosen = plan_selection(plan, scan)
        if owned:
            for old in out.glob("shard-*.arrow"):
                old.unlink()
            shutil.rmtree(out / HELDOUT_DIR, ignore_errors=True)
        shards = pack_selection(plan, scan, chosen, bar)
    heldout = (
        write_heldout(out / HELDOUT_DIR, plan, scan, chosen.vocab)
        if cfg.heldout_fraction else None
    )
    timer.__exit__(None, None, None)
    manifest = _manifest(plan, scan, chosen, shards, timer)
    if heldout is not None:
        manifest["heldout"] = heldout
    write_manifest(out, manifest)
    shutil.rmtree(plan.work, ignore_errors=True)
    shutil.rmtree(out / TOKENIZER_CACHE, ignore_errors=True)
    return manifest



@dataclass
class BudgetSelection:
    """The selection step's outcome: budgets and the pieces that fill them exactly."""

    est: dict[str, dict[str, Any]]  # per-domain input estimates (InputStats.estimate)
    vocab: list[str]  # sorted domain names; the shards' domain codes index it
    shares: dict[str, float]  # target shares
    budgets: dict[str, int]  # per budget group (a domain, or GLOBAL_GROUP): exact tokens
    el: Eligible  # every eligible document of the files read
    sel: Selection  # the pieces, in packing order


def plan_selection(plan: ScanPlan, scan: ScanResult) -> BudgetSelection:
    """Turn the scan into exact integer budgets and choose the pieces that fill them
    (module docstring, step 3); raises :class:`BuildError` when they cannot be filled."""
    cfg, strategy, stats = plan.cfg, plan.strategy, scan.stats
    est = stats.estimate()
    vocab = sorted(est)
    if not vocab:
        raise BuildError(f"no usable documents in {len(scan.summaries)} input file(s); "
                         f"skipped: {dict(stats.skipped)}")
    unknown = sorted(set(cfg.mix) - set(vocab))
    if unknown:
        raise BuildError(f"--mix names domain(s) not found in the input: {', '.join(unknown)} "
                         f"(found: {', '.join(vocab)})")
    shares, budgets = plan_budgets(strategy, plan.total, stats.token_weights(), cfg.mix,
                                   cfg.upsample)
    el = scan.pool.eligible(vocab, cfg.long_threshold)
    if strategy.per_domain:
        groups = {d: np.flatnonzero(el.domain == i) for i, d in enumerate(vocab)}
    else:
        groups = {GLOBAL_GROUP: np.arange(len(el))}
    empty = [k for k, b in budgets.items() if b and not len(groups.get(k, ()))]
    if empty:
        raise BuildError(
            f"no eligible documents for {', '.join(empty)} (budget > 0): every document there "
            f"is shorter than --long-threshold {cfg.long_threshold} and none was kept by "
            f"--short-keep {cfg.short_keep}; raise --short-keep or set --mix"
        )
    check_budgets(budgets, {k: int(el.length[g].sum()) for k, g in groups.items()})
    sel = select_pieces(el, groups, budgets, chunk=cfg.long_threshold if strategy.chunk else None)
    repeated = {k: g for k, g in sel.groups.items() if g.repeated_tokens}
    if repeated and cfg.strict:
        k, g = next(iter(sorted(repeated.items())))
        raise BuildError(
            f"--strict: {k} has {g.available} eligible tokens in the input but its budget is "
            f"{g.budget}; its documents would be repeated {g.epochs} times"
        )
    assert int(sel.length.sum()) == plan.total
    return BudgetSelection(est, vocab, shares, budgets, el, sel)


def pack_selection(plan: ScanPlan, scan: ScanResult, chosen: BudgetSelection,
                   bar: Any) -> list[dict[str, Any]]:
    """Read the chosen pieces from the spills, pack them into rows of ``seq_len`` and write
    the shards into ``plan.out`` (module docstring, step 4); returns their manifest entries."""
    cfg, dtype, el, sel = plan.cfg, plan.tok.dtype, chosen.el, chosen.sel
    shard_rows = cfg.shard_rows or max(1, SHARD_BYTES // (cfg.seq_len * dtype.itemsize))
    reader = SpillReader(plan.work, dtype, scan.pool.spilled)
    pack_bar = bar.add_task("pack rows", total=plan.rows)

    def pieces():
        for j in range(len(sel.doc)):
            i = int(sel.doc[j])
            off = int(sel.offset[j])
            toks = reader.read(int(el.file[i]), int(el.start[i]) + off, int(sel.length[j]))
            yield Piece(toks, int(el.domain[i]), int(el.file[i]), int(el.line[i]), off)

    shards: list[dict[str, Any]] = []
    writer: ShardWriter | None = None
    written = 0
    try:
        for batch in pack_rows(pieces(), cfg.seq_len, dtype, batch_rows=min(64, shard_rows)):
            r0 = 0
            while r0 < batch.rows:
                if writer is None:
                    writer = ShardWriter(plan.out / f"shard-{len(shards):05d}.arrow", cfg.seq_len,
                                         dtype, provenance=True, num_domains=len(chosen.vocab))
                take = min(batch.rows - r0, shard_rows - writer.rows)
                sl = slice(r0, r0 + take)
                writer.write(
                    batch.input_ids[sl], batch.doc_offsets[sl], batch.doc_domains[sl],
                    batch.continues[sl], {k: v[sl] for k, v in batch.provenance().items()},
                )
                r0 += take
                written += take
                bar.advance(pack_bar, take)
                if writer.rows == shard_rows:
                    shards.append(writer.close())
                    writer = None
                    fail_hook("pack", len(shards))
        if writer is not None:
            shards.append(writer.close())
            writer = None
    finally:
        reader.close()
        if writer is not None:
            writer.close()
    assert written == plan.rows
    return shards


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _outputs_intact(out: Path, manifest: dict[str, Any]) -> bool:
    """A finished build is reused only while every file it lists is there and unchanged."""
    from longctx.stage import StageError, verified_file

    try:
        for s in manifest.get("shards", []):
            verified_file(out, s.get("path"), s.get("sha256"), what="shard")
        if isinstance(manifest.get("heldout"), dict):
            sub = out / HELDOUT_DIR
            held = read_manifest(sub) or {}
            for s in held.get("shards", []):
                verified_file(sub, s.get("path"), s.get("sha256"), what="held-out shard")
    except (StageError, AttributeError):
        return False
    return True


def write_heldout(folder: Path, plan: ScanPlan, scan: ScanResult,
                  vocab: list[str]) -> dict[str, Any]:
    """Pack the held-out documents of the files indexed into ``folder`` (whole documents from
    their first token, per domain up to ``eval_tokens``) and return the build manifest's
    ``heldout`` entry. The rounds tokenized every held-out document these can be chosen
    from, so the choice equals choosing among all of them tokenized."""
    from longctx.mix.heldout import PAD_DOMAIN, choose_heldout, pack_heldout

    cfg, tok, dtype = plan.cfg, plan.tok, plan.tok.dtype
    seq_len = cfg.eval_seq_len or cfg.seq_len
    per_domain = parse_count(str(cfg.eval_tokens), name="eval_tokens")
    h = scan.pool.held
    names = scan.pool.names
    all_domains = sorted(set(vocab) | {names[int(k)] for k in np.unique(h["domain"])})
    code = {d: i for i, d in enumerate(all_domains)}
    remap = np.asarray([code.get(d, -1) for d in names] or [0], dtype=np.int64)
    held_domain = remap[h["domain"]]
    tok_pos = np.flatnonzero(h["length"] >= 0)
    c = {"file": h["file"][tok_pos].astype(np.int64), "line": h["line"][tok_pos],
         "length": h["length"][tok_pos], "priority": h["priority"][tok_pos],
         "start": h["start"][tok_pos], "domain": held_domain[tok_pos]}
    picked = choose_heldout(c["domain"], c["length"], c["priority"], per_domain, seq_len)
    rows = pack_heldout(c["length"][picked], c["priority"][picked], seq_len)
    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(folder / "shard-00000.arrow", seq_len, dtype, provenance=True,
                         num_domains=len(all_domains))
    pad_id = int(tok.eos_id if tok.eos_id is not None else 0)
    reader = SpillReader(plan.work, dtype, scan.pool.spilled)
    try:
        for row in rows:
            ids = np.full(seq_len, pad_id, dtype=dtype)
            offsets, domains, pfile, pline = [0], [], [], []
            for j, n in zip(row.docs, row.lengths, strict=True):
                i = int(picked[j])
                at = offsets[-1]
                ids[at : at + n] = reader.read(int(c["file"][i]), int(c["start"][i]), n)
                offsets.append(at + n)
                domains.append(int(c["domain"][i]))
                pfile.append(int(c["file"][i]))
                pline.append(int(c["line"][i]))
            if row.padding:  # a padding piece: never scored
                offsets.append(seq_len)
                domains.append(PAD_DOMAIN)
                pfile.append(-1)
                pline.append(-1)
            writer.write(
                ids[None, :], [offsets], [domains], [False],
                {"piece_file": [pfile], "piece_line": [pline], "piece_start": [[0] * len(pfile)]},
            )
        shard = writer.close()
    except BaseException:
        writer.close()
        raise
    finally:
        reader.close()
    rel = {s["index"]: s["file"] for s in scan.summaries}
    ids_sorted = sorted(f"{rel[int(c['file'][i])]}:{int(c['line'][i])}" for i in picked)
    tokens = np.minimum(c["length"][picked], seq_len)
    nd = len(all_domains)
    held_docs = np.bincount(held_domain, minlength=nd)
    docs = np.bincount(c["domain"][picked], minlength=nd)
    doc_tokens = np.bincount(c["domain"][picked], weights=tokens, minlength=nd)
    entry = {
        "path": HELDOUT_DIR,
        "fraction": cfg.eval_fraction,
        "seed": cfg.eval_seed,
        "seq_len": seq_len,
        "tokens_per_domain_target": per_domain,
        "documents": int(len(picked)),
        "documents_held_out": int(len(h)),
        "documents_tokenized": int(len(tok_pos)),
        "documents_held_out_per_domain": {d: int(held_docs[k]) for d, k in code.items()
                                          if held_docs[k]},
        "tokens": int(tokens.sum()),
        "padding_tokens": int(sum(r.padding for r in rows)),
        "truncated_documents": int(np.sum(c["length"][picked] > seq_len)),
        "domains": {d: {"documents": int(docs[k]), "tokens": int(doc_tokens[k])}
                    for d, k in code.items() if docs[k]},
        "doc_ids_sha256": hashlib.sha256("\n".join(ids_sorted).encode()).hexdigest(),
        "rule": "a document is held out when blake2b(text, key=eval_seed) < eval_fraction; "
                "held-out documents are in no training row of any strategy built with the same "
                "eval_fraction and eval_seed",
    }
    write_manifest(folder, {
        "stage": HELDOUT_STAGE, "status": "done", "format_version": FORMAT_VERSION,
        "config_hash": config_hash(entry), "seq_len": seq_len, "num_sequences": len(rows),
        "dtype": np.dtype(dtype).name, "domain_vocab": all_domains, "tokenizer": tok.describe(),
        "shards": [shard], "heldout": entry,
    })
    return entry


def _manifest(
    plan: ScanPlan, scan: ScanResult, chosen: BudgetSelection, shards: list[dict[str, Any]], timer: Timer,
) -> dict[str, Any]:
    cfg, keep, total, tasks = plan.cfg, plan.keep, plan.total, plan.tasks
    vocab, est, shares, budgets = chosen.vocab, chosen.est, chosen.shares, chosen.budgets
    sel, el, summaries = chosen.sel, chosen.el, scan.summaries
    T = cfg.long_threshold
    doms = el.domain[sel.doc]
    long = is_long(el.length[sel.doc], T)
    nd = len(vocab)
    tokens = np.bincount(doms, weights=sel.length, minlength=nd)
    long_tokens = np.bincount(doms, weights=sel.length * long, minlength=nd)
    first = (sel.offset == 0) & (sel.epoch == 0)
    L = {d: est[d]["long_tokens"] for d in vocab}
    S = {d: est[d]["short_tokens"] for d in vocab}
    expected = expected_global_shares(L, S, keep) if not budgets.keys() - {GLOBAL_GROUP} else {}
    domains: dict[str, Any] = {}
    for i, d in enumerate(vocab):
        mask = doms == i
        g = sel.groups.get(d) or sel.groups.get(GLOBAL_GROUP)
        entry = {
            "target_share": shares.get(d) if shares else None,
            "target_tokens": budgets.get(d) if d in budgets else None,
            "tokens": int(tokens[i]),
            "share": float(tokens[i] / total) if total else 0.0,
            "long_token_fraction": float(long_tokens[i] / tokens[i]) if tokens[i] else 0.0,
            "predicted_long_token_fraction": predicted_long_fraction(L[d], S[d], keep),
            "docs": int(np.unique(sel.doc[mask]).size),
            "pieces": int(mask.sum()),
            "available_tokens": est[d]["eligible_tokens"],
        }
        if expected:
            entry["expected_share"] = expected.get(d, 0.0)
        if d in sel.groups:
            entry["epochs"] = g.epochs
            entry["repeated_tokens"] = g.repeated_tokens
        domains[d] = entry
    all_long = float(long_tokens.sum() / total) if total else 0.0
    tokenized = scan.pool.tokenized_docs()
    tokenized_tokens = scan.pool.tokenized_tokens()
    proven_short = scan.pool.proven_short_docs()
    needed = needed_tokens(plan, scan, budgets)
    inputs: dict[str, Any] = {}
    for d in vocab:
        e = est[d]
        inputs[d] = {
            "docs": e["docs"],
            "tokens": e["tokens"],
            "long_token_fraction": (e["long_tokens"] / e["tokens"]) if e["tokens"] else 0.0,
            "estimated": e["estimated"] or len(summaries) < len(tasks),
            "tokenized_docs": tokenized.get(d, 0),
            "tokenized_tokens": tokenized_tokens.get(d, 0),
            "needed_tokens": needed.get(d, 0),  # of them, what exact selection needed
            "proven_short_docs": proven_short.get(d, 0),  # short by the bound, not tokenized
            "sample_docs": e["sample_docs"],
            "tokens_per_byte": e["tokens_per_byte"],
            "bytes": e["bytes"],
            "long_tokens": e["long_tokens"],
            "eligible_tokens": e["eligible_tokens"],
        }
    repeats = {k: {"epochs": g.epochs, "repeated_tokens": g.repeated_tokens,
                   "available_tokens": g.available, "budget": g.budget}
               for k, g in sel.groups.items() if g.repeated_tokens}
    warnings = [
        f"{k}: only {v['available_tokens']} eligible tokens for a budget of {v['budget']}; "
        f"documents repeated ({v['epochs']} passes)" for k, v in sorted(repeats.items())
    ]
    read = {s["index"] for s in summaries}
    return {
        "stage": STAGE,
        "status": "done",
        "format_version": FORMAT_VERSION,
        "config": plan.out_cfg,
        "config_hash": plan.cfg_hash,
        "strategy": plan.strategy.name,
        "seq_len": cfg.seq_len,
        "num_sequences": plan.rows,
        "tokens_total": total,
        "tokens_requested": plan.requested,
        "dtype": np.dtype(plan.tok.dtype).name,
        "long_threshold": T,
        "short_keep": cfg.short_keep,
        "keep_probability": keep,
        "seed": cfg.seed,
        "domain_vocab": vocab,
        "domains": domains,
        "long_token_fraction": all_long,
        "input": inputs,
        "input_files": {"total": len(tasks), "read": len(summaries),
                        "subset": len(summaries) < len(tasks),
                        "domain_pool_files": {
                            d: sum(s["stats"].get(d, {}).get("docs", 0) > 0 for s in summaries)
                            for d in vocab}},
        "repeated": repeats,
        "warnings": warnings,
        "skipped": dict(sorted(scan.stats.skipped.items())),
        "shards": shards,
        "files": [{"path": r, "read": i in read} for i, r in enumerate(plan.rels)],
        "tokenizer": plan.tok.describe(),
        "documents_selected": int(first.sum()),
        "rounds": scan.pool.rounds,
        "seconds": {"wall": round(timer.wall, 3), "cpu": round(timer.cpu, 3),
                    "scan_cpu_used_files": round(sum(s.get("cpu_s", 0.0)
                                                     for s in (*summaries, *scan.scans)), 3)},
        "python": sys.version.split()[0],
    }


__all__ = ["BuildConfig", "BuildError", "plan_scan", "run_build"]
