"""Priority cut-offs: how far down a group's priority order documents must be tokenized.

Selection takes a budget group's eligible documents in priority order until the budget is
met, so only documents up to some priority can ever be chosen. Before tokenizing, a
document's length is an estimate (bytes x tokens per byte); whether a not-kept document is
eligible (long) is known only once it is tokenized. The cut-off is therefore found in
rounds, all pure arithmetic on a group's candidates (arrays in priority order):

1. the first cut-off is the smallest priority whose candidates' *estimated* eligible tokens
   reach ``margin`` x the budget;
2. once every candidate up to the cut-off is tokenized, their *real* eligible tokens decide:
   at least the budget -> met (exact: selection over all candidates stops inside the
   cut-off, so it equals "tokenize everything, then select"); fewer -> the cut-off is
   extended by an estimate of what is missing, scaled by how far reality fell short of the
   estimate so far, with a margin that doubles each extension; no candidate left beyond it
   -> exhausted (the caller indexes more files, and starts over from the estimates with
   the real tokens known so far, or lets selection repeat the group).

A cut-off is a priority value: every candidate with ``priority <= cutoff`` is inside.
Nothing here depends on file order, worker count or timing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NONE = -1  # a cut-off with nothing inside
ALL = (1 << 64) - 1  # a cut-off with everything inside
TOKENIZE = "tokenize"  # candidates inside the cut-off still need tokenizing
MET = "met"
EXHAUSTED = "exhausted"
MARGIN = 1.05  # estimated / needed tokens of a first cut-off: a short round costs only the
# missing part (texts are re-read from the index's spill), an overshoot costs tokenizing
MIN_CORRECTION = 0.25  # real / estimated eligible tokens, clipped: a bad estimate costs
MAX_CORRECTION = 4.0  # rounds, never exactness


def estimated_eligible(est_tokens: np.ndarray, kept: np.ndarray, threshold: int) -> np.ndarray:
    """Estimated eligible tokens per candidate: a kept one counts whole, a not-kept one only
    when its estimate says it is long (it is eligible only if it really is)."""
    est = np.asarray(est_tokens, dtype=np.float64)
    return np.where(np.asarray(kept, dtype=bool) | (est >= threshold), est, 0.0)


def inside(priority: np.ndarray, cutoff: int) -> int:
    """How many candidates (in priority order) have ``priority <= cutoff``."""
    if cutoff < 0:
        return 0
    return int(np.searchsorted(priority, np.uint64(cutoff), side="right"))


def cutoff_reaching(priority: np.ndarray, est_eligible: np.ndarray, target: float,
                    start: int = 0) -> int:
    """The smallest cut-off whose candidates from position ``start`` on hold ``target``
    estimated eligible tokens (at least one candidate past ``start``; ``ALL`` when even every
    candidate falls short)."""
    n = len(priority)
    if start >= n:
        return ALL
    cum = np.cumsum(est_eligible[start:], dtype=np.float64)
    k = int(np.searchsorted(cum, target, side="left"))
    if k >= n - start:
        return ALL
    return int(priority[start + k])


@dataclass(frozen=True)
class Decision:
    status: str  # TOKENIZE, MET or EXHAUSTED
    cutoff: int  # NONE, a priority, or ALL
    extensions: int  # cut-off extensions so far (each doubles the margin)
    tokens: int  # real eligible tokens inside the cut-off (once all of it is tokenized)


def decide(
    priority: np.ndarray,
    est_eligible: np.ndarray,
    known: np.ndarray,
    real_eligible: np.ndarray,
    budget: int,
    cutoff: int | None,
    extensions: int = 0,
    margin: float = MARGIN,
) -> Decision:
    """One group's next step. Arrays are per candidate, sorted by priority (uint64);
    ``known`` says whose eligibility is known (tokenized, or proved short by the token bound);
    ``real_eligible`` holds the real tokens of known eligible candidates (0 elsewhere).
    ``cutoff`` None starts from the estimates (the first round, or after more candidates
    joined the group): real tokens where known, the rest estimated and scaled by how the
    known ones compared with their estimates.

    TOKENIZE: tokenize the untokenized candidates up to the returned cut-off, then call again.
    """
    if budget <= 0:
        return Decision(MET, NONE, extensions, 0)
    if cutoff is None:
        cutoff = cutoff_reaching(priority, _known(est_eligible, known, real_eligible,
                                                  known), margin * budget)
    k = inside(priority, cutoff)
    if not known[:k].all():
        return Decision(TOKENIZE, cutoff, extensions, 0)
    have = int(real_eligible[:k].sum())
    if have >= budget:
        return Decision(MET, cutoff, extensions, have)
    if k >= len(priority):
        return Decision(EXHAUSTED, ALL, extensions, have)
    tokens = _known(est_eligible, known, real_eligible, np.arange(len(priority)) < k)
    want = (budget - have) * margin * 2.0 ** (extensions + 1)
    return Decision(TOKENIZE, cutoff_reaching(priority, tokens, want, start=k), extensions + 1,
                    have)


def _known(est_eligible: np.ndarray, known: np.ndarray, real_eligible: np.ndarray,
           reference: np.ndarray) -> np.ndarray:
    """Real eligible tokens where known, elsewhere the estimate scaled by how the
    ``reference`` candidates' real tokens compared with their estimates."""
    real, est = float(real_eligible[reference].sum()), float(est_eligible[reference].sum())
    corr = min(max(real / est, MIN_CORRECTION), MAX_CORRECTION) if est > 0 else 1.0
    return np.where(known, real_eligible, est_eligible * corr)
