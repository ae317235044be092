"""Noise levels: percentile-bootstrap intervals over documents and needles (numpy only).

One place for every interval the tool reports, so a loss table, a needle average and a
before/after difference are all read against the same rule: 1,000 resamples with a fixed
seed, the 2.5th and 97.5th percentiles. A difference is a result only when its interval
excludes zero (or, where seeds repeat, when it exceeds their spread).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SAMPLES = 1000
SEED = 0
RULE = f"95% percentile bootstrap, {SAMPLES} resamples, seed {SEED}"


def _percentiles(values: np.ndarray) -> list[float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def ratio_interval(sums: np.ndarray, counts: np.ndarray) -> list[float] | None:
    """Interval of sum(sums)/sum(counts) with documents resampled (None for < 2 documents).

    ``sums``/``counts`` hold one entry per document; documents with no scored token are
    left out first.
    """
    keep = np.asarray(counts) > 0
    s, c = np.asarray(sums, dtype=np.float64)[keep], np.asarray(counts, dtype=np.float64)[keep]
    if len(c) < 2:
        return None
    idx = np.random.default_rng(SEED).integers(0, len(c), size=(SAMPLES, len(c)))
    return _percentiles(s[idx].sum(axis=1) / c[idx].sum(axis=1))


def mean_interval(scores: Sequence[float] | np.ndarray) -> list[float] | None:
    """Interval of the mean of independent trials, e.g. needles (None for < 2)."""
    x = np.asarray(scores, dtype=np.float64)
    if x.size < 2:
        return None
    idx = np.random.default_rng(SEED).integers(0, x.size, size=(SAMPLES, x.size))
    return _percentiles(x[idx].mean(axis=1))


def paired_loss_difference(
    before: Mapping[str, Any], after: Mapping[str, Any], bucket: str, domain: str | None = None
) -> dict[str, Any] | None:
    """after − before mean loss in ``bucket`` over the documents both were measured on,
    with an interval from resampling documents (the same documents in both: paired).

    ``before``/``after`` are ``loss.json`` contents with ``per_document`` blocks. Returns
    None when the two share fewer than two documents with tokens in the bucket.
    """
    try:
        k = list(before["buckets"]).index(bucket)
        k2 = list(after["buckets"]).index(bucket)
        a, b = before["per_document"], after["per_document"]
    except (KeyError, ValueError, TypeError):
        return None
    pos_b = {d: j for j, d in enumerate(b["id"])}
    rows = [
        (i, pos_b[d]) for i, d in enumerate(a["id"])
        if d in pos_b and (domain is None or a["domain"][i] == domain)
    ]
    s0 = np.asarray([a["bucket_sums"][i][k] for i, _ in rows], dtype=np.float64)
    c0 = np.asarray([a["bucket_counts"][i][k] for i, _ in rows], dtype=np.float64)
    s1 = np.asarray([b["bucket_sums"][j][k2] for _, j in rows], dtype=np.float64)
    c1 = np.asarray([b["bucket_counts"][j][k2] for _, j in rows], dtype=np.float64)
    keep = (c0 > 0) & (c1 > 0)
    s0, c0, s1, c1 = s0[keep], c0[keep], s1[keep], c1[keep]
    if len(s0) < 2:
        return None
    idx = np.random.default_rng(SEED).integers(0, len(s0), size=(SAMPLES, len(s0)))
    diffs = s1[idx].sum(axis=1) / c1[idx].sum(axis=1) - s0[idx].sum(axis=1) / c0[idx].sum(axis=1)
    diff = float(s1.sum() / c1.sum() - s0.sum() / c0.sum())
    lo, hi = _percentiles(diffs)
    return {"difference": diff, "interval95": [lo, hi], "documents": int(len(s0)),
            "beyond_noise": bool(lo > 0 or hi < 0), "rule": f"paired {RULE} over documents"}


def spread(values: Sequence[float]) -> dict[str, float] | None:
    """Seed-to-seed spread: max − min and the sample standard deviation (None for < 2)."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if x.size < 2:
        return None
    return {"range": float(x.max() - x.min()), "std": float(x.std(ddof=1)), "n": int(x.size)}
