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
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longctx.config import to_dict
from longctx.eval.generate import EvalError, load_eval_model
from longctx.stage import run_hash, sha256_file, write_json_atomic, write_manifest

DEFAULT_POSITIONS = [1024, 16384, 32768, 65536, 131072]


@dataclass
class LossConfig:
    """``longctx eval loss`` settings."""

    model: str = "smollm2-135m"
    data: str = ""
    buckets: list[str] = field(default_factory=lambda: ["0-4096", "4096-131072"])
    positions: list[int] = field(default_factory=lambda: list(DEFAULT_POSITIONS))
    max_rows: int | None = None
    attention: str = "doc"
    rope_theta: float | None = None
    logits_chunk: int = 1024
    dtype: str = "auto"
    device: str = "auto"

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
    import torch.nn.functional as F

    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)[None, :]
    with torch.inference_mode():
        hidden = model.get_decoder()(input_ids=x, use_cache=False).last_hidden_state[0]
        head = model.get_output_embeddings()
        targets = x[0, 1:]
        out = []
        for s in range(0, targets.shape[0], chunk):
            logits = head(hidden[s : s + chunk][: targets.shape[0] - s]).float()
            out.append(F.cross_entropy(logits, targets[s : s + chunk], reduction="none"))
    if not out:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(out).double().cpu().numpy()


def row_targets(row: Any, mode: str, model: Any, chunk: int) -> tuple[np.ndarray, ...]:
    """(losses, positions, domain index) of every scored target token in one packed row."""
    losses, positions, domains = [], [], []
    offs = row.doc_offsets
    if mode == "doc":
        for k in range(len(offs) - 1):
            a, b = int(offs[k]), int(offs[k + 1])
            if b - a < 2:
                continue
            losses.append(token_losses(model, row.input_ids[a:b], chunk))
            positions.append(np.arange(1, b - a, dtype=np.int64))
            domains.append(np.full(b - a - 1, int(row.doc_domains[k]), dtype=np.int64))
    else:
        n = len(row.input_ids)
        keep = ~row.doc_start_mask()[1:]
        piece = np.repeat(np.arange(len(offs) - 1), np.diff(offs))[1:]
        losses.append(token_losses(model, row.input_ids, chunk)[keep])
        positions.append(np.arange(1, n, dtype=np.int64)[keep])
        domains.append(row.doc_domains[piece][keep].astype(np.int64))
    if not losses:
        z = np.zeros(0)
        return z, z.astype(np.int64), z.astype(np.int64)
    return np.concatenate(losses), np.concatenate(positions), np.concatenate(domains)


def select_rows(n: int, max_rows: int | None) -> list[int]:
    """All rows, or ``max_rows`` spread evenly over the data (deterministic)."""
    if max_rows is None or max_rows >= n:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, max_rows)})


def run_loss(cfg: LossConfig, out_dir: str | Path, *, progress: bool | None = None) -> dict:
    """Compute loss.json / loss.png / manifest.json; refuses a tokenizer mismatch first."""
    from rich.progress import Progress

    from longctx.data.tokenizer import load_tokenizer
    from longctx.eval.plots import plot_loss
    from longctx.models import resolve_model_dir
    from longctx.pack.shards import PackedDataset, check_tokenizer_match

    t0 = time.perf_counter()
    buckets = parse_buckets(cfg.buckets)
    ds = PackedDataset(cfg.data)
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
    show = sys.stderr.isatty() if progress is None else progress
    with Progress(disable=not show, transient=True) as bar:
        task = bar.add_task("eval loss", total=len(rows))
        for i in rows:
            loss, pos, dom = row_targets(ds.row(i), cfg.attention, model, cfg.logits_chunk)
            if dom.size and (dom.max() >= nd or dom.min() < 0):
                raise EvalError(f"{cfg.data}: row {i} has a domain index outside domain_vocab")
            for k, (_, lo, hi) in enumerate(buckets):
                m = (pos >= lo) & (pos < hi)
                sums[:, k] += np.bincount(dom[m], weights=loss[m], minlength=nd)
                counts[:, k] += np.bincount(dom[m], minlength=nd)
            # Loss@P: mean over positions in [previous P, P)
            pbin = np.searchsorted(edges, pos, side="right") - 1
            ok = pbin < npos
            psums += np.bincount(pbin[ok], weights=loss[ok], minlength=npos)
            pcounts += np.bincount(pbin[ok], minlength=npos)
            bar.advance(task)

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
    plot_loss(result, out / "loss.png")
    write_manifest(
        out,
        {
            "stage": "eval.loss",
            "status": "done",
            "config": to_dict(cfg),
            "config_hash": run_hash(cfg),
            "counts": {"rows": len(rows), "tokens_scored": int(counts.sum())},
            "input": {"data": str(cfg.data), "data_tokenizer_sha256": ds.tokenizer_sha256},
            "checksums": {
                "loss.json": sha256_file(out / "loss.json"),
                "loss.png": sha256_file(out / "loss.png"),
            },
            "seconds": time.perf_counter() - t0,
        },
    )
    return result
