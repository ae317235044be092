"""Evaluation during training (``train --eval-every K``): the current weights, in-process.

Exporting a checkpoint and running ``eval loss`` / ``eval needle`` on it costs a model save
and load per point; this module runs the same measurements on the model being trained:

- held-out loss by position bucket (and by domain), with the token loss and position rule of
  :func:`longctx.eval.loss.row_targets`, on the first ``seq_len`` tokens of ``eval_rows``
  held-out rows spread evenly over the split (the same rows at every evaluation), and with
  ``--eval-key-tokens`` the loss on key tokens (LongPPL, :mod:`longctx.eval.keytokens`),
  marked by the current weights themselves;
- a small needle grid, each cell built and scored as ``eval needle`` does (one tokenization
  of the haystack, at the start of the run).

It runs in eval mode under ``torch.no_grad`` with the RNG state forked (so the training
curve is the same with and without it), then puts the model back in train mode.

**Several ranks (FSDP2).** Every rank runs the same held-out rows (the forwards, and so the
parameter all-gathers, match one for one), after unsharding the root module whose
embeddings and head the direct calls below would otherwise see sharded; rank 0 writes the
record. The needle grid runs only with one process: greedy decoding stops on what each rank
generates, so ranks could run different numbers of forwards and hang the all-gathers.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from longctx.pack.shards import PackedDataset, PackedRow
from longctx.train.config import EVAL_STAGES, TrainConfig


def first_window(row: PackedRow, length: int) -> PackedRow:
    """The first ``length`` tokens of a stored row, with its pieces cut at ``length``."""
    if len(row.input_ids) <= length:
        return row
    offs = row.doc_offsets
    inner = offs[(offs > 0) & (offs < length)]
    offsets = np.concatenate([[0], inner, [length]]).astype(np.int32)
    return PackedRow(row.input_ids[:length], offsets, row.doc_domains[: len(offsets) - 1],
                     row.continues)


@dataclass
class EvalCost:
    """Seconds spent evaluating and training in this process (the share printed per eval)."""

    eval_s: float = 0.0
    train_s: float = 0.0

    def share(self) -> float:
        return self.eval_s / self.train_s if self.train_s > 0 else float("inf")


@dataclass
class TrainingEval:
    """What every evaluation of one run reuses: held-out rows, buckets, needle cells."""

    rows: list[PackedRow]
    domains: list[str]
    buckets: list[tuple[str, int, int]]
    attention: str
    chunk: int
    key_rule: Any = None  # KeyTokenRule, or None: no key-token loss
    needle: Any = None  # NeedleConfig of the grid, or None
    builder: Any = None  # CellBuilder over the haystack's ids
    tokenizer: Any = None
    cost: EvalCost = field(default_factory=EvalCost)

    @classmethod
    def build(cls, cfg: TrainConfig, tok_dir: Any, seq_len: int, world: int,
              main: bool) -> TrainingEval:
        from longctx.eval.keytokens import KeyTokenRule
        from longctx.eval.loss import parse_buckets, select_rows

        ds = PackedDataset(cfg.eval_data, stages=EVAL_STAGES)
        picked = select_rows(len(ds), cfg.eval_rows)
        rows = [first_window(ds.row(i), seq_len) for i in picked]
        rule = KeyTokenRule(cfg.eval_key_context, cfg.eval_key_stride) \
            if cfg.eval_key_tokens else None
        ev = cls(rows, list(ds.domain_vocab), parse_buckets(cfg.resolved_eval_buckets()),
                 cfg.eval_attention, cfg.ce_chunk, rule)
        lengths = cfg.resolved_needle_lengths()
        if lengths and world > 1:
            if main:
                print(f"train: --eval-every: the needle grid is skipped with {world} "
                      f"processes (greedy decoding could stop at different steps on "
                      f"different ranks); run `eval needle` on the checkpoints instead")
        elif lengths:
            ev._build_needle(cfg, tok_dir, lengths)
        return ev

    def _build_needle(self, cfg: TrainConfig, tok_dir: Any, lengths: list[int]) -> None:
        """Tokenize the haystack once and build every cell now, so a length too short for
        the prompt fails before training (one given as 0 = seq_len is dropped instead, so
        the default grid never stops a short-sequence run)."""
        from longctx.config import ConfigError
        from longctx.data.tokenizer import load_tokenizer
        from longctx.eval.generate import EvalError
        from longctx.eval.haystack import Haystack, collapse_whitespace, load_haystack
        from longctx.eval.needle import CellBuilder, NeedleConfig, build_needle

        raw = load_haystack(cfg.eval_haystack or None)
        text = collapse_whitespace(raw.text) if cfg.eval_needle == "ruler" else raw.text
        hay = Haystack(text, raw.source, raw.files)
        self.tokenizer = load_tokenizer(tok_dir)
        self.builder = CellBuilder(self.tokenizer, hay.text, max(lengths))
        needle = NeedleConfig(needle=cfg.eval_needle, lengths=lengths,
                              depths=list(cfg.eval_needle_depths), seed=cfg.seed)
        fits = []
        for length in lengths:
            try:
                for depth in needle.depths:
                    build_needle(needle, self.builder, length, depth, 0)
                fits.append(length)
            except EvalError as e:
                if length in cfg.eval_needle_lengths:
                    raise ConfigError(f"config key 'eval_needle_lengths': {e}") from None
                print(f"train: --eval-every: no needle cells at seq_len {length} ({e})")
        if fits:
            needle.lengths = fits
            self.needle = needle

    # ------------------------------------------------------------------------- running
    def run(self, wrapper: Any, sharded: bool, device: Any, autocast: Any) -> dict[str, Any]:
        """One evaluation of the current weights: the record's ``eval`` fields (the caller
        adds ``eval_s``)."""
        import torch

        model = wrapper.lm
        devices = [device] if device.type == "cuda" else []
        wrapper.eval()
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad(), autocast(), \
                    _unsharded(wrapper, sharded):
                rec: dict[str, Any] = self._loss(model)
                if self.needle is not None:
                    rec["needle"] = self._needle(model)
        finally:
            wrapper.train()
        return rec

    def _loss(self, model: Any) -> dict[str, Any]:
        from longctx.eval.loss import bucket_sums, row_targets, sequence_scorer

        nd = len(self.domains)
        score = sequence_scorer(model, self.chunk, self.key_rule)
        parts = [row_targets(row, self.attention, score) for row in self.rows]
        loss, pos, dom, _, key = (np.concatenate([p[j] for p in parts]) for j in range(5))
        sums, counts = bucket_sums(loss, pos, dom, nd, self.buckets)
        names = [b[0] for b in self.buckets]

        def mean(s: float, c: int) -> float | None:  # None: no tokens, or not finite
            return float(s / c) if c and math.isfinite(s / c) else None

        rec: dict[str, Any] = {
            "loss_by_bucket": {n: mean(sums[:, k].sum(), counts[:, k].sum())
                               for k, n in enumerate(names)},
            "loss_by_domain": {self.domains[d]: {n: mean(sums[d, k], counts[d, k])
                                                 for k, n in enumerate(names)}
                               for d in range(nd) if counts[d].sum()},
            "tokens_by_bucket": {n: int(counts[:, k].sum()) for k, n in enumerate(names)},
            "rows": len(self.rows),
            "attention": self.attention,
        }
        if self.key_rule is not None:
            ksums, kcounts = bucket_sums(loss[key], pos[key], dom[key], nd, self.buckets)
            rec["key_loss_by_bucket"] = {n: mean(ksums[:, k].sum(), kcounts[:, k].sum())
                                         for k, n in enumerate(names)}
            rec["key_tokens_by_bucket"] = {n: int(kcounts[:, k].sum())
                                           for k, n in enumerate(names)}
        return rec

    def _needle(self, model: Any) -> dict[str, Any]:
        from longctx.eval.needle import _run_cell

        cfg = self.needle
        head = cfg.headline_scorer
        cells = []
        for length in cfg.lengths:
            for depth in cfg.depths:
                rec = _run_cell(cfg, model, self.tokenizer, self.builder, length, depth, None)
                cells.append({"length": length, "depth": depth, "score": rec["scores"][head],
                              "response": rec["response"]})
        return {"needle": cfg.needle, "headline": head,
                "average": float(np.mean([c["score"] for c in cells])), "cells": cells}


@contextlib.contextmanager
def _unsharded(wrapper: Any, sharded: bool) -> Any:
    """FSDP2: gather the root's parameters (embeddings, norm, head) for direct calls."""
    if not sharded:
        yield
        return
    wrapper.unshard()
    try:
        yield
    finally:
        wrapper.reshard()


def describe_cost(step: int, rec: dict[str, Any], cost: EvalCost) -> str:
    """The line printed after each evaluation: its seconds and the share of training time."""
    share = cost.share()
    pct = f"{100 * share:.1f}%" if np.isfinite(share) else "n/a"
    needle = rec.get("needle")
    tail = f", needle {needle['average']:.2f}" if needle else ""
    losses = ", ".join(f"{k} {v:.4f}" for k, v in rec["loss_by_bucket"].items() if v is not None)
    hint = "; over 5%: raise --eval-every or lower --eval-rows" if share > 0.05 else ""
    return (f"eval at step {step}: {rec['eval_s']:.1f} s = {pct} of training so far "
            f"({cost.eval_s:.1f} s eval / {cost.train_s:.1f} s training); loss by position "
            f"{losses}{tail}{hint}")
