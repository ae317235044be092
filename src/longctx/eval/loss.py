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
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longctx.cliopts import opt
from longctx.config import to_dict
from longctx.eval.generate import EvalError, load_eval_model
from longctx.eval.model_args import EvalModelArgs
from longctx.intervals import RULE as INTERVAL_RULE
from longctx.intervals import ratio_interval
from longctx.stage import run_hash, sha256_file, write_json_atomic, write_manifest

DEFAULT_POSITIONS = [1024, 16384, 32768, 65536, 131072]


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


def row_targets(row: Any, mode: str, model: Any, chunk: int) -> tuple[np.ndarray, ...]:
    """(losses, positions, domain index, piece index) of every scored target token in one
    packed row. Padding pieces (negative domain) are never scored."""
    losses, positions, domains, pieces = [], [], [], []
    offs = row.doc_offsets
    if mode == "doc":
        for k in range(len(offs) - 1):
            a, b = int(offs[k]), int(offs[k + 1])
            if b - a < 2 or int(row.doc_domains[k]) < 0:
                continue
            losses.append(token_losses(model, row.input_ids[a:b], chunk))
            positions.append(np.arange(1, b - a, dtype=np.int64))
            domains.append(np.full(b - a - 1, int(row.doc_domains[k]), dtype=np.int64))
            pieces.append(np.full(b - a - 1, k, dtype=np.int64))
    else:
        n = len(row.input_ids)
        piece = np.repeat(np.arange(len(offs) - 1), np.diff(offs))[1:]
        dom = row.doc_domains[piece].astype(np.int64)
        keep = ~row.doc_start_mask()[1:] & (dom >= 0)
        losses.append(token_losses(model, row.input_ids, chunk)[keep])
        positions.append(np.arange(1, n, dtype=np.int64)[keep])
        domains.append(dom[keep])
        pieces.append(piece[keep])
    if not losses:
        z = np.zeros(0)
        return z, z.astype(np.int64), z.astype(np.int64), z.astype(np.int64)
    return (np.concatenate(losses), np.concatenate(positions), np.concatenate(domains),
            np.concatenate(pieces))


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


def run_loss(
    cfg: LossConfig, out_dir: str | Path, *, progress: bool | None = None, force: bool = False
) -> dict:
    """Claim ``out_dir`` (lock, foreign-folder and input-overlap checks), then run."""
    from longctx.stage import claimed_stage

    with claimed_stage(out_dir, "eval.loss", run_hash(cfg), force=force,
                       inputs=[cfg.data, cfg.model]):
        return _run_loss(cfg, out_dir, progress=progress)


def _run_loss(cfg: LossConfig, out_dir: str | Path, *, progress: bool | None = None) -> dict:
    """Compute loss.json / loss.png / manifest.json; refuses a tokenizer mismatch first."""
    from longctx.data.tokenizer import load_tokenizer
    from longctx.models import resolve_model_dir
    from longctx.pack.shards import PackedDataset, check_tokenizer_match
    from longctx.plotting import loss_figure, save_png
    from longctx.progress import progress_bar

    t0 = time.perf_counter()
    buckets = parse_buckets(cfg.buckets)
    folder, split = resolve_split(cfg.data)
    if split == "train":
        print(f"eval loss: {cfg.data} has no held-out split (build it with --eval-tokens); "
              f"measuring on TRAINING rows", file=sys.stderr)
    ds = PackedDataset(folder, stages=("data.build", "data.heldout"))
    tok = load_tokenizer(resolve_model_dir(cfg.model))
    check_tokenizer_match(ds.tokenizer_sha256, tok.fingerprint, data_dir=cfg.data, model=cfg.model)
    rows = select_rows(len(ds), cfg.max_rows)
    if not rows:
        raise EvalError(f"packed data {cfg.data} has no rows")
    model, _ = load_eval_model(
        cfg.model,
        rope_theta=cfg.rope_theta,
        max_length=ds.seq_len,
        dtype=cfg.dtype,
        device=cfg.device,
    )
    vocab = ds.domain_vocab
    positions = sorted(set(int(p) for p in cfg.positions))
    edges = np.asarray([0] + positions, dtype=np.int64)
    nd, nb, npos = len(vocab), len(buckets), len(positions)
    sums, counts = np.zeros((nd, nb)), np.zeros((nd, nb), dtype=np.int64)
    psums, pcounts = np.zeros(npos), np.zeros(npos, dtype=np.int64)
    # per document (piece): domain, bucket sums/counts, Loss@P sums/counts (for intervals)
    doc_dom: list[int] = []
    doc_id: list[str] = []  # "row:piece", the same across models evaluated on the same data
    doc_b: list[np.ndarray] = []
    doc_p: list[np.ndarray] = []
    with progress_bar(progress, transient=True) as bar:
        task = bar.add_task("eval loss", total=len(rows))
        for i in rows:
            loss, pos, dom, piece = row_targets(ds.row(i), cfg.attention, model,
                                                cfg.logits_chunk)
            if dom.size and (dom.max() >= nd or dom.min() < 0):
                raise EvalError(f"{folder}: row {i} has a domain index outside domain_vocab")
            pbin = np.searchsorted(edges, pos, side="right") - 1  # Loss@P: [previous P, P)
            ids, first, local = np.unique(piece, return_index=True, return_inverse=True)
            bsum, bcnt = np.zeros((len(ids), nb)), np.zeros((len(ids), nb))
            for k, (_, lo, hi) in enumerate(buckets):
                m = (pos >= lo) & (pos < hi)
                sums[:, k] += np.bincount(dom[m], weights=loss[m], minlength=nd)
                counts[:, k] += np.bincount(dom[m], minlength=nd)
                bsum[:, k] = np.bincount(local[m], weights=loss[m], minlength=len(ids))
                bcnt[:, k] = np.bincount(local[m], minlength=len(ids))
            ok = pbin < npos
            psums += np.bincount(pbin[ok], weights=loss[ok], minlength=npos)
            pcounts += np.bincount(pbin[ok], minlength=npos)
            psum, pcnt = np.zeros((len(ids), npos)), np.zeros((len(ids), npos))
            np.add.at(psum, (local[ok], pbin[ok]), loss[ok])
            np.add.at(pcnt, (local[ok], pbin[ok]), 1)
            doc_dom.extend(int(dom[j]) for j in first)
            doc_id.extend(f"{i}:{int(k)}" for k in ids)
            doc_b.append(np.stack([bsum, bcnt], axis=-1))
            doc_p.append(np.stack([psum, pcnt], axis=-1))
            bar.advance(task)

    ddom = np.asarray(doc_dom, dtype=np.int64)
    db = np.concatenate(doc_b) if doc_b else np.zeros((0, nb, 2))
    dp = np.concatenate(doc_p) if doc_p else np.zeros((0, npos, 2))

    def interval(block: np.ndarray, col: int, mask: np.ndarray | None = None) -> list[float] | None:
        rows_ = block if mask is None else block[mask]
        return ratio_interval(rows_[:, col, 0], rows_[:, col, 1])

    def mean(s: float, c: int) -> float | None:
        return float(s / c) if c else None

    names = [b[0] for b in buckets]
    result = {
        "stage": "eval.loss",
        "model": cfg.model,
        "data": str(cfg.data),
        "attention": cfg.attention,
        "buckets": names,
        "domains": {
            vocab[d]: {names[k]: mean(sums[d, k], counts[d, k]) for k in range(nb)}
            for d in range(nd)
        },
        "overall": {names[k]: mean(sums[:, k].sum(), counts[:, k].sum()) for k in range(nb)},
        "positions": {str(p): mean(psums[j], pcounts[j]) for j, p in enumerate(positions)},
        "split": split,
        "split_note": (
            "held-out documents: in no training row of any mixture built with the same "
            "eval_fraction and eval_seed" if split == "heldout" else
            "TRAINING rows: the model may have been trained on these tokens"
        ),
        "interval95": {
            vocab[d]: {names[k]: interval(db, k, ddom == d) for k in range(nb)} for d in range(nd)
        },
        "overall_interval95": {names[k]: interval(db, k) for k in range(nb)},
        "positions_interval95": {str(p): interval(dp, j) for j, p in enumerate(positions)},
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "loss.json", result)
    save_png(loss_figure(result), out / "loss.png")
    write_manifest(
        out,
        {
            "stage": "eval.loss",
            "status": "done",
            "config": to_dict(cfg),
            "config_hash": run_hash(cfg),
            "counts": {"rows": len(rows), "tokens_scored": int(counts.sum())},
            "input": {"data": str(cfg.data), "read": str(folder), "split": split,
                      "data_tokenizer_sha256": ds.tokenizer_sha256},
            "checksums": {
                "loss.json": sha256_file(out / "loss.json"),
                "loss.png": sha256_file(out / "loss.png"),
            },
            "seconds": time.perf_counter() - t0,
        },
    )
    return result
