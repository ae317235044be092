"""Validation loss by position and domain from packed shards (the paper's Table 5 and Fig. 3).

Two attention modes decide what "position" means:

- ``doc`` (default): every piece of a packed row (a document, or the part of one that fell
  into this row) is run as its own sequence from position 0, so a token's position is the
  number of same-document tokens the model sees before it. A piece that continues a
  document from the previous row starts again at 0 here, because its beginning is not in
  this row (the model really has no more context than that).
- ``row``: the whole row is one causal sequence ("regardless of document boundary", as the
  paper packs it); a token's position is its index in the row, and targets that start a
  new document are not scored (predicting an unrelated document's first token says nothing
  about long context).

The LM head runs over ``logits_chunk`` positions at a time, so a 128K row never
materialises a [seq, vocab] logits tensor.

Given a ``data build`` folder with a held-out split (``--eval-tokens``), the loss is measured
on ``BUILD/heldout`` (documents no training row holds); without one it is measured on the
training rows, and ``loss.json`` says so (``"split": "train"``). Every mean comes with a 95%
bootstrap interval over documents (pieces), so a difference smaller than the interval is
not read as a result.

``--key-tokens`` adds key-token loss (LongPPL, see :mod:`longctx.eval.keytokens`): the same
table over only the targets whose loss drops when the long context is present, marked by
the evaluated model or by ``--key-model``. Off by default: it costs about
(K + stride) / stride extra forward tokens per scored token past position K + stride.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longctx.cliopts import opt
from longctx.config import to_dict
from longctx.eval.distributed import PartialLog, Ranks, claimed_by_main, merged_result
from longctx.eval.distributed import current as current_ranks
from longctx.eval.generate import EvalError, load_eval_model
from longctx.eval.keytokens import KeyTokenRule, mark_key_tokens, short_context_losses
from longctx.eval.model_args import EvalModelArgs
from longctx.intervals import RULE as INTERVAL_RULE
from longctx.intervals import ratio_interval
from longctx.stage import run_hash, sha256_file, write_json_atomic, write_manifest

DEFAULT_POSITIONS = [1024, 16384, 32768, 65536, 131072]
KEY = "Key tokens (LongPPL)"


@dataclass
class LossConfig(EvalModelArgs):
    """``longctx eval loss`` settings."""

    data: str = opt("", "Packed data folder (from data build).")
    buckets: list[str] = opt(factory=lambda: ["0-4096", "4096-131072"],
                             help="Comma-separated position buckets LO-HI (LO <= position < HI).")
    positions: list[int] = opt(factory=lambda: list(DEFAULT_POSITIONS),
                               help="Loss@P positions; Loss@P averages positions in "
                               "[previous P, P).")
    max_rows: int | None = opt(None, "Evaluate at most N rows, spread evenly over the data.")
    attention: str = opt("doc", "doc: each document piece is its own sequence; row: the whole "
                         "packed row is causal.")
    logits_chunk: int = opt(1024, "Positions per LM-head chunk (bounds logits memory).")
    key_tokens: bool = opt(False, "Also report loss on key tokens (LongPPL): targets whose "
                           "loss with only the last K tokens of context exceeds their "
                           "full-context loss by more than --key-lsd, where the full-context "
                           "log-likelihood is above --key-lcl.", panel=KEY)
    key_context: int = opt(KeyTokenRule.context, "K: tokens of context of the short pass.",
                           panel=KEY)
    key_stride: int = opt(KeyTokenRule.stride, "Short windows of K+stride tokens advance by "
                          "stride (a target's short context: K to K+stride-1 tokens; 1: "
                          "exactly K, slowest).", panel=KEY)
    key_lsd: float = opt(KeyTokenRule.lsd, "Key when loss_short - loss_long > this (nats).",
                         panel=KEY)
    key_lcl: float = opt(KeyTokenRule.lcl, "Key when -loss_long > this (long-context "
                         "log-likelihood).", panel=KEY)
    key_model: str = opt("", "Model that marks the key tokens (same tokenizer as the data); "
                         "key-token loss is still the evaluated model's.", panel=KEY,
                         show="the evaluated model")

    def key_rule(self) -> KeyTokenRule:
        return KeyTokenRule(self.key_context, self.key_stride, self.key_lsd, self.key_lcl)

    def validate(self) -> None:
        if not self.data:
            raise EvalError("data: give the packed data folder (--data DIR)")
        if self.attention not in ("doc", "row"):
            raise EvalError(f"attention: expected 'doc' or 'row', got {self.attention!r}")
        parse_buckets(self.buckets)
        if not self.positions or any(p <= 0 for p in self.positions):
            raise EvalError(f"positions: need positive token positions, got {self.positions}")
        if self.max_rows is not None and self.max_rows <= 0:
            raise EvalError(f"max_rows must be positive, got {self.max_rows}")
        if self.key_context <= 0 or self.key_stride <= 0:
            raise EvalError(f"key_context and key_stride must be positive, got "
                            f"{self.key_context} and {self.key_stride}")
        if self.key_model and not self.key_tokens:
            raise EvalError("key_model: marks key tokens, give --key-tokens too")


def parse_buckets(buckets: list[str]) -> list[tuple[str, int, int]]:
    """``["0-4096", ...]`` -> [(name, lo, hi)]; a bucket holds positions lo <= p < hi."""
    out = []
    for b in buckets:
        parts = str(b).split("-")
        try:
            lo, hi = int(parts[0]), int(parts[1])
            if len(parts) != 2 or lo < 0 or hi <= lo:
                raise ValueError
        except (ValueError, IndexError):
            raise EvalError(
                f"bucket {b!r}: expected LO-HI with 0 <= LO < HI, e.g. 0-4096"
            ) from None
        out.append((str(b), lo, hi))
    if not out:
        raise EvalError("buckets: give at least one LO-HI bucket")
    return out


def token_losses(model: Any, ids: np.ndarray, chunk: int) -> np.ndarray:
    """Next-token losses (nats) of one sequence: ``out[j]`` is the loss of ``ids[j + 1]``."""
    import torch

    from longctx.train.loss import chunked_token_losses

    if len(ids) < 2:
        return np.zeros(0, dtype=np.float64)
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)[None, :]
    with torch.inference_mode():
        hidden = model.get_decoder()(input_ids=x, use_cache=False).last_hidden_state[0]
        weight = model.get_output_embeddings().weight
        losses = chunked_token_losses(hidden[:-1], weight, x[0, 1:], chunk)
    return losses.double().cpu().numpy()


Scorer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def sequence_scorer(
    model: Any, chunk: int, rule: KeyTokenRule | None = None, key_model: Any = None
) -> Scorer:
    """``ids -> (losses, key-token mask)`` of one sequence, both aligned with
    :func:`token_losses`. The mask is all False without a ``rule``; ``key_model`` (default:
    ``model``) marks the key tokens, reusing ``model``'s full-context losses when it is
    ``model``."""
    marker = model if key_model is None else key_model

    def score(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        loss = token_losses(model, ids, chunk)
        if rule is None:
            return loss, np.zeros(len(loss), dtype=bool)
        long = loss if marker is model else token_losses(marker, ids, chunk)
        short = short_context_losses(marker, ids, rule, chunk)
        return loss, mark_key_tokens(long, short, rule.lsd, rule.lcl)

    return score


def row_targets(row: Any, mode: str, score: Scorer) -> tuple[np.ndarray, ...]:
    """(losses, positions, domain index, piece index, key-token mask) of every scored target
    token in one packed row. Padding pieces (negative domain) are never scored."""
    losses, positions, domains, pieces, keys = [], [], [], [], []
    offs = row.doc_offsets
    if mode == "doc":
        for k in range(len(offs) - 1):
            a, b = int(offs[k]), int(offs[k + 1])
            if b - a < 2 or int(row.doc_domains[k]) < 0:
                continue
            loss, key = score(row.input_ids[a:b])
            losses.append(loss)
            keys.append(key)
            positions.append(np.arange(1, b - a, dtype=np.int64))
            domains.append(np.full(b - a - 1, int(row.doc_domains[k]), dtype=np.int64))
            pieces.append(np.full(b - a - 1, k, dtype=np.int64))
    else:
        n = len(row.input_ids)
        piece = np.repeat(np.arange(len(offs) - 1), np.diff(offs))[1:]
        dom = row.doc_domains[piece].astype(np.int64)
        keep = ~row.doc_start_mask()[1:] & (dom >= 0)
        loss, key = score(row.input_ids)
        losses.append(loss[keep])
        keys.append(key[keep])
        positions.append(np.arange(1, n, dtype=np.int64)[keep])
        domains.append(dom[keep])
        pieces.append(piece[keep])
    if not losses:
        z = np.zeros(0, dtype=np.int64)
        return z.astype(np.float64), z, z, z, z.astype(bool)
    return (np.concatenate(losses), np.concatenate(positions), np.concatenate(domains),
            np.concatenate(pieces), np.concatenate(keys))


def bucket_sums(
    loss: np.ndarray, pos: np.ndarray, group: np.ndarray, groups: int,
    buckets: list[tuple[str, int, int]],
) -> tuple[np.ndarray, np.ndarray]:
    """(sums, counts), each [groups, buckets]: losses summed by group index and bucket."""
    sums = np.zeros((groups, len(buckets)))
    counts = np.zeros((groups, len(buckets)), dtype=np.int64)
    for k, (_, lo, hi) in enumerate(buckets):
        m = (pos >= lo) & (pos < hi)
        sums[:, k] = np.bincount(group[m], weights=loss[m], minlength=groups)
        counts[:, k] = np.bincount(group[m], minlength=groups)
    return sums, counts


def block_interval(
    block: np.ndarray, col: int, mask: np.ndarray | None = None
) -> list[float] | None:
    """Bootstrap interval of one bucket of a per-document [docs, buckets, (sum, count)] block."""
    rows = block if mask is None else block[mask]
    return ratio_interval(rows[:, col, 0], rows[:, col, 1])


def safe_mean(s: float, c: int) -> float | None:
    return float(s / c) if c else None


def key_token_summary(
    block: np.ndarray, doc_domains: np.ndarray, vocab: list[str], names: list[str],
    rule: KeyTokenRule, marked_by: str,
) -> dict[str, Any]:
    """``loss.json``'s ``key_tokens``: the evaluated model's loss on key tokens per domain and
    bucket, with token counts and the same intervals as plain loss. ``block`` is
    [documents, buckets, (sum, count)] in ``per_document`` order."""
    nb = len(names)
    by_dom = [block[doc_domains == d] for d in range(len(vocab))]
    sums = np.asarray([[b[:, k, 0].sum() for k in range(nb)] for b in by_dom]).reshape(-1, nb)
    cnts = np.asarray([[int(b[:, k, 1].sum()) for k in range(nb)] for b in by_dom],
                      dtype=np.int64).reshape(-1, nb)
    return {
        "marked_by": marked_by,
        "context": rule.context,
        "stride": rule.stride,
        "lsd": rule.lsd,
        "lcl": rule.lcl,
        "rule": rule.describe(),
        "domains": {
            vocab[d]: {names[k]: safe_mean(sums[d, k], cnts[d, k]) for k in range(nb)}
            for d in range(len(vocab))
        },
        "overall": {names[k]: safe_mean(sums[:, k].sum(), cnts[:, k].sum()) for k in range(nb)},
        "interval95": {
            vocab[d]: {names[k]: block_interval(block, k, doc_domains == d) for k in range(nb)}
            for d in range(len(vocab))
        },
        "overall_interval95": {names[k]: block_interval(block, k) for k in range(nb)},
        "tokens": {
            "key": int(cnts.sum()),
            "domains": {
                vocab[d]: {names[k]: int(cnts[d, k]) for k in range(nb)}
                for d in range(len(vocab))
            },
            "overall": {names[k]: int(cnts[:, k].sum()) for k in range(nb)},
        },
        "per_document": {
            "bucket_sums": np.round(block[:, :, 0], 6).tolist(),
            "bucket_counts": block[:, :, 1].astype(np.int64).tolist(),
        },
    }


def resolve_split(data: str | Path) -> tuple[Path, str]:
    """(folder to read, split name): a build's held-out part when it has one."""
    from longctx.stage import read_manifest

    folder = Path(data)
    manifest = read_manifest(folder) or {}
    if manifest.get("stage") == "data.heldout":
        return folder, "heldout"
    held = folder / "heldout"
    if isinstance(manifest.get("heldout"), dict) and (held / "manifest.json").is_file():
        return held, "heldout"
    return folder, "train"


def select_rows(n: int, max_rows: int | None) -> list[int]:
    """All rows, or ``max_rows`` spread evenly over the data (deterministic)."""
    if max_rows is None or max_rows >= n:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, max_rows)})


def loss_run_hash(cfg: LossConfig) -> str:
    """Config hash plus the identity of the data, the model and the key-token model."""
    return run_hash(cfg, inputs=("model", "data", "key_model"))


def row_hash(cfg: LossConfig) -> str:
    """What one row's record depends on: the run hash of every setting but ``max_rows``."""
    return loss_run_hash(dataclasses.replace(cfg, max_rows=None))


def run_loss(
    cfg: LossConfig, out_dir: str | Path, *, progress: bool | None = None, force: bool = False
) -> dict:
    """Claim ``out_dir`` (lock, foreign-folder and input-overlap checks), then run; under
    torchrun the rows are shared over the ranks (:mod:`longctx.eval.distributed`)."""
    ranks = current_ranks()
    with claimed_by_main(ranks, out_dir, "eval.loss", loss_run_hash(cfg), force=force,
                         inputs=[cfg.data, cfg.model] + ([cfg.key_model] if cfg.key_model
                                                         else [])):
        return _run_loss(cfg, Path(out_dir), ranks, progress=progress)


def row_record(
    i: int, row: Any, cfg: LossConfig, score: Scorer, nd: int,
    buckets: list[tuple[str, int, int]], edges: np.ndarray, key_tokens: bool,
) -> dict[str, Any]:
    """One row's sums, by domain and by document (piece), as a JSON object: the aggregates
    are computed from these records alone, so any split of the rows gives the same JSON."""
    npos = len(edges) - 1
    loss, pos, dom, piece, key = row_targets(row, cfg.attention, score)
    if dom.size and (dom.max() >= nd or dom.min() < 0):
        raise EvalError(f"{cfg.data}: row {i} has a domain index outside domain_vocab")
    pbin = np.searchsorted(edges, pos, side="right") - 1  # Loss@P: [previous P, P)
    ids, first, local = np.unique(piece, return_index=True, return_inverse=True)
    dsum, dcnt = bucket_sums(loss, pos, dom, nd, buckets)
    bsum, bcnt = bucket_sums(loss, pos, local, len(ids), buckets)
    ok = pbin < npos
    psum, pcnt = np.zeros((len(ids), npos)), np.zeros((len(ids), npos))
    np.add.at(psum, (local[ok], pbin[ok]), loss[ok])
    np.add.at(pcnt, (local[ok], pbin[ok]), 1)
    rec = {
        "row": i,
        "sums": dsum.tolist(),
        "counts": dcnt.tolist(),
        "position_sums": np.bincount(pbin[ok], weights=loss[ok], minlength=npos).tolist(),
        "position_counts": np.bincount(pbin[ok], minlength=npos).tolist(),
        "doc_domain": [int(dom[j]) for j in first],
        "doc_piece": [int(k) for k in ids],
        "doc_buckets": np.stack([bsum, bcnt], axis=-1).tolist(),
        "doc_positions": np.stack([psum, pcnt], axis=-1).tolist(),
    }
    if key_tokens:
        rec["doc_key"] = np.stack(bucket_sums(loss[key], pos[key], local[key], len(ids),
                                              buckets), axis=-1).tolist()
    return rec


def _run_loss(
    cfg: LossConfig, out: Path, ranks: Ranks, *, progress: bool | None = None
) -> dict:
    """This rank's share of the rows into ``rows.jsonl`` (a rank's partial file under
    torchrun; finished rows are reused); rank 0 then computes loss.json / loss.png /
    manifest.json from every row's record. Refuses a tokenizer mismatch first."""
    from longctx.data.tokenizer import load_tokenizer
    from longctx.models import resolve_model_dir
    from longctx.pack.shards import PackedDataset, check_tokenizer_match
    from longctx.progress import progress_bar

    t0 = time.perf_counter()
    buckets = parse_buckets(cfg.buckets)
    folder, split = resolve_split(cfg.data)
    if split == "train" and ranks.is_main:
        print(f"eval loss: {cfg.data} has no held-out split (build it with --eval-tokens); "
              f"measuring on TRAINING rows", file=sys.stderr)
    ds = PackedDataset(folder, stages=("data.build", "data.heldout"))
    tok = load_tokenizer(resolve_model_dir(cfg.model))
    check_tokenizer_match(ds.tokenizer_sha256, tok.fingerprint, data_dir=cfg.data, model=cfg.model)
    rows = select_rows(len(ds), cfg.max_rows)
    if not rows:
        raise EvalError(f"packed data {cfg.data} has no rows")
    rhash = row_hash(cfg)
    log = PartialLog(out, "rows", ranks)
    done = _rows_done(log, rhash)
    ranks.barrier()  # every rank has read the finished rows before any rank appends
    todo = [i for i in rows if i not in done]
    mine = ranks.share(todo)
    rule = cfg.key_rule() if cfg.key_tokens else None
    if mine:
        device = ranks.device(cfg.device)
        model, _ = load_eval_model(cfg.model, rope_theta=cfg.rope_theta,
                                   max_length=ds.seq_len, dtype=cfg.dtype, device=device)
        key_model = None
        if cfg.key_tokens and cfg.key_model:
            key_tok = load_tokenizer(resolve_model_dir(cfg.key_model))
            check_tokenizer_match(ds.tokenizer_sha256, key_tok.fingerprint, data_dir=cfg.data,
                                  model=cfg.key_model)
            key_model, _ = load_eval_model(cfg.key_model, rope_theta=None,
                                           max_length=ds.seq_len, dtype=cfg.dtype,
                                           device=device)
        score = sequence_scorer(model, cfg.logits_chunk, rule, key_model)
    positions = sorted(set(int(p) for p in cfg.positions))
    edges = np.asarray([0] + positions, dtype=np.int64)
    nd = len(ds.domain_vocab)
    with progress_bar(progress if ranks.is_main else False, transient=True) as bar, \
            log.sink() as write:
        task = bar.add_task("eval loss", total=len(mine))
        for i in mine:
            rec = row_record(i, ds.row(i), cfg, score, nd, buckets, edges, rule is not None)
            write(rec | {"row_hash": rhash})
            bar.advance(task)

    def write_outputs() -> dict:
        records = _rows_done(log, rhash)
        return _write_loss(cfg, out, ranks, t0, [records[i] for i in rows], ds, folder, split,
                           tok, buckets, positions, rule, computed=len(todo))

    return merged_result(ranks, log, write_outputs, out / "loss.json")


def _rows_done(log: PartialLog, rhash: str) -> dict[int, dict[str, Any]]:
    return {int(r["row"]): r for r in log.records() if r.get("row_hash") == rhash}


def _write_loss(
    cfg: LossConfig, out: Path, ranks: Ranks, t0: float, records: list[dict[str, Any]],
    ds: Any, folder: Path, split: str, tok: Any, buckets: list[tuple[str, int, int]],
    positions: list[int], rule: KeyTokenRule | None, computed: int,
) -> dict:
    """loss.json, loss.png and manifest.json from the rows' records, summed in row order."""
    from longctx.plotting import loss_figure, save_png

    rows = [int(r["row"]) for r in records]
    vocab = ds.domain_vocab
    nd, nb, npos = len(vocab), len(buckets), len(positions)
    sums, counts = np.zeros((nd, nb)), np.zeros((nd, nb), dtype=np.int64)
    psums, pcounts = np.zeros(npos), np.zeros(npos, dtype=np.int64)
    for r in records:
        sums += np.asarray(r["sums"], dtype=np.float64).reshape(nd, nb)
        counts += np.asarray(r["counts"], dtype=np.int64).reshape(nd, nb)
        psums += np.asarray(r["position_sums"], dtype=np.float64)
        pcounts += np.asarray(r["position_counts"], dtype=np.int64)
    # per document (piece): domain, bucket sums/counts, Loss@P sums/counts (for intervals)
    doc_dom = [d for r in records for d in r["doc_domain"]]
    doc_id = [f"{r['row']}:{k}" for r in records for k in r["doc_piece"]]  # same across models
    ddom = np.asarray(doc_dom, dtype=np.int64)
    db = _doc_block(records, "doc_buckets", nb)
    dp = _doc_block(records, "doc_positions", npos)

    names = [b[0] for b in buckets]
    result = {
        "stage": "eval.loss",
        "model": cfg.model,
        "data": str(cfg.data),
        "attention": cfg.attention,
        "buckets": names,
        "domains": {
            vocab[d]: {names[k]: safe_mean(sums[d, k], counts[d, k]) for k in range(nb)}
            for d in range(nd)
        },
        "overall": {
            names[k]: safe_mean(sums[:, k].sum(), counts[:, k].sum()) for k in range(nb)
        },
        "positions": {str(p): safe_mean(psums[j], pcounts[j]) for j, p in enumerate(positions)},
        "split": split,
        "split_note": (
            "held-out documents: in no training row of any mixture built with the same "
            "eval_fraction and eval_seed" if split == "heldout" else
            "TRAINING rows: the model may have been trained on these tokens"
        ),
        "interval95": {
            vocab[d]: {names[k]: block_interval(db, k, ddom == d) for k in range(nb)}
            for d in range(nd)
        },
        "overall_interval95": {names[k]: block_interval(db, k) for k in range(nb)},
        "positions_interval95": {str(p): block_interval(dp, j) for j, p in enumerate(positions)},
        "interval_rule": f"{INTERVAL_RULE} over documents (pieces); documents: {len(ddom)}",
        "data_read": str(folder),
        # per document: bucket sums and counts, so two models evaluated on the same data can
        # be compared document by document (a paired bootstrap of their difference)
        "per_document": {
            "id": doc_id,
            "domain": [vocab[d] for d in doc_dom],
            "bucket_sums": np.round(db[:, :, 0], 6).tolist(),
            "bucket_counts": db[:, :, 1].astype(np.int64).tolist(),
        },
        "tokens": {
            "rows": len(rows),
            "rows_total": len(ds),
            "seq_len": ds.seq_len,
            "scored": int(counts.sum()),
            "domains": {
                vocab[d]: {names[k]: int(counts[d, k]) for k in range(nb)} for d in range(nd)
            },
            "positions": {str(p): int(pcounts[j]) for j, p in enumerate(positions)},
        },
        "position_rule": (
            "doc: position = index of the target token inside its packed piece, each piece run "
            "as its own sequence (a piece continued from the previous row counts from its row "
            "start); row: index in the packed row, document-start targets not scored. "
            "Bucket LO-HI holds LO <= position < HI; Loss@P averages positions in "
            "[previous P, P)."
        ),
        "rope_theta": cfg.rope_theta,
        "tokenizer": tok.describe(),
    }
    if rule is not None:
        result["key_tokens"] = key_token_summary(_doc_block(records, "doc_key", nb), ddom,
                                                 vocab, names, rule, cfg.key_model or cfg.model)
    counted = {"rows": len(rows), "tokens_scored": int(counts.sum()),
               "computed_now": computed, "reused": len(rows) - computed}
    if rule is not None:
        counted["key_tokens"] = result["key_tokens"]["tokens"]["key"]
    write_json_atomic(out / "loss.json", result)
    save_png(loss_figure(result), out / "loss.png")
    write_manifest(
        out,
        {
            "stage": "eval.loss",
            "status": "done",
            "config": to_dict(cfg),
            "config_hash": loss_run_hash(cfg),
            "counts": counted,
            "input": {"data": str(cfg.data), "read": str(folder), "split": split,
                      "data_tokenizer_sha256": ds.tokenizer_sha256},
            "world_size": ranks.world,
            "checksums": {
                "loss.json": sha256_file(out / "loss.json"),
                "loss.png": sha256_file(out / "loss.png"),
            },
            "seconds": time.perf_counter() - t0,
        },
    )
    return result


def _doc_block(records: list[dict[str, Any]], key: str, width: int) -> np.ndarray:
    """The rows' per-document [documents, width, (sum, count)] blocks, stacked in row order."""
    parts = [np.asarray(r[key], dtype=np.float64).reshape(-1, width, 2) for r in records]
    return np.concatenate(parts) if parts else np.zeros((0, width, 2))
