"""Priority cut-offs: hand-computed rounds, and for random groups the rounds always end with
exactly the selection that tokenizing every candidate would give."""

from __future__ import annotations

import numpy as np
import pytest

from longctx.mix.cutoff import (
    ALL,
    EXHAUSTED,
    MET,
    NONE,
    TOKENIZE,
    cutoff_reaching,
    decide,
    estimated_eligible,
    inside,
)

P = np.asarray([10, 20, 30, 40, 50], dtype=np.uint64)


def test_estimated_eligible_counts_not_kept_only_when_estimated_long():
    est = estimated_eligible(np.asarray([600.0, 300.0, 700.0, 100.0]),
                             np.asarray([False, False, True, True]), threshold=512)
    assert est.tolist() == [600.0, 0.0, 700.0, 100.0]


def test_first_cutoff_then_met():
    est = np.full(5, 100.0)
    # margin 1.05 x budget 150 = 157.5 estimated tokens: the first two candidates (200)
    d = decide(P, est, np.zeros(5, bool), np.zeros(5), budget=150, cutoff=None)
    assert (d.status, d.cutoff, d.extensions) == (TOKENIZE, 20, 0)
    tokenized = np.asarray([True, True, False, False, False])
    d = decide(P, est, tokenized, np.asarray([90, 80, 0, 0, 0]), 150, d.cutoff)
    assert (d.status, d.cutoff, d.tokens) == (MET, 20, 170)


def test_short_round_extends_from_the_corrected_estimate():
    est = np.full(5, 100.0)
    tokenized = np.asarray([True, True, False, False, False])
    d = decide(P, est, tokenized, np.asarray([60, 50, 0, 0, 0]), 150, cutoff=20)
    # 110 real of 200 estimated: the rest count x0.55 (55 each); missing 40 x margin 1.05 x 2
    # = 84 past the cut-off: candidates 30 and 40 (110 >= 84)
    assert (d.status, d.cutoff, d.extensions, d.tokens) == (TOKENIZE, 40, 1, 110)
    # the next extension doubles the margin again: missing 20 x 1.05 x 4 = 84 > 100 x 130/400
    tokenized[:4] = True
    d = decide(P, est, tokenized, np.asarray([60, 50, 10, 10, 0]), 150, 40, d.extensions)
    assert (d.status, d.cutoff, d.extensions) == (TOKENIZE, ALL, 2)


def test_nothing_eligible_inside_extends_with_the_smallest_correction():
    est = np.full(5, 100.0)
    tokenized = np.asarray([True, False, False, False, False])
    d = decide(P, est, tokenized, np.zeros(5), 100, cutoff=10)
    # 0 real of 100 estimated: correction clipped to 0.25; 100 x 1.05 x 2 = 210 > 4 x 25
    assert (d.status, d.cutoff) == (TOKENIZE, ALL)


def test_exhausted_and_zero_budget():
    est = np.full(5, 100.0)
    d = decide(P, est, np.ones(5, bool), np.full(5, 50), budget=400, cutoff=ALL)
    assert (d.status, d.tokens) == (EXHAUSTED, 250)
    assert decide(P, est, np.zeros(5, bool), np.zeros(5), 0, None).status == MET
    assert decide(P[:0], est[:0], np.zeros(0, bool), np.zeros(0), 10, None).status == EXHAUSTED


def test_new_candidates_inside_an_old_cutoff_are_tokenized_first():
    # a later file added priority 15 under the cut-off 20: it must be tokenized before the
    # round's result counts
    p = np.asarray([10, 15, 20, 30], dtype=np.uint64)
    d = decide(p, np.full(4, 100.0), np.asarray([True, False, True, False]),
               np.asarray([100, 0, 100, 0]), 150, cutoff=20)
    assert (d.status, d.cutoff) == (TOKENIZE, 20)


def test_restart_counts_real_tokens_and_scales_the_estimates():
    # after more candidates joined: the two tokenized ones hold 50 real of 100 estimated
    # tokens each, so the others count 100 x 0.5; 1.05 x 100 = 105 is reached at priority 20
    p = np.asarray([10, 15, 20, 30], dtype=np.uint64)
    d = decide(p, np.full(4, 100.0), np.asarray([True, False, True, False]),
               np.asarray([50, 0, 50, 0]), 100, cutoff=None, extensions=2)
    assert (d.status, d.cutoff, d.extensions) == (TOKENIZE, 20, 2)


def test_ties_at_the_cutoff_are_all_inside():
    p = np.asarray([5, 5, 7], dtype=np.uint64)
    c = cutoff_reaching(p, np.full(3, 10.0), 15)
    assert c == 5 and inside(p, c) == 2
    assert inside(p, NONE) == 0 and inside(p, ALL) == 3
    assert cutoff_reaching(p, np.full(3, 10.0), 31) == ALL
    assert cutoff_reaching(p, np.full(3, 10.0), 5, start=3) == ALL


def _select(lengths: np.ndarray, eligible: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """The selection rule itself: eligible candidates in priority order until the budget is
    met, the last one truncated; repeated in passes when all of them fall short."""
    idx = np.flatnonzero(eligible)
    total = int(lengths[idx].sum())
    if budget == 0 or total == 0:
        return []
    passes, rem = divmod(budget, total)
    out = [(int(i), int(lengths[i])) for i in idx] * passes
    for i in idx:
        if rem == 0:
            break
        take = min(rem, int(lengths[i]))
        out.append((int(i), take))
        rem -= take
    return out


def _run(priority, est_el, eligible, real, budget, margin, pool, later):
    """Rounds as the build runs them: tokenize what ``decide`` asks; when a group is
    exhausted and candidates are still to come (files not indexed yet), add them and start
    over from the estimates."""
    tokenized = np.zeros(len(priority), bool)
    cutoff, ext, rounds = None, 0, 0
    while True:
        idx = np.flatnonzero(pool)
        d = decide(priority[idx], est_el[idx], tokenized[idx],
                   np.where(tokenized & eligible, real, 0)[idx], budget, cutoff, ext, margin)
        cutoff, ext = d.cutoff, d.extensions
        if d.status == EXHAUSTED and later.any():
            pool |= later
            later[:] = False
            cutoff = None
            continue
        if d.status != TOKENIZE:
            return d, tokenized, rounds
        k = inside(priority[idx], cutoff)
        assert not tokenized[idx[:k]].all()  # every round tokenizes something new
        tokenized[idx[:k]] = True
        rounds += 1


@pytest.mark.parametrize("seed", range(300))
def test_rounds_end_with_the_full_tokenization_selection(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    span = int(rng.choice([n // 2 + 1, 1 << 62]))  # small spans give priority ties
    priority = np.sort(rng.integers(0, span, n).astype(np.uint64))
    threshold = int(rng.choice([64, 512, 2048]))
    est = np.exp(rng.normal(np.log(threshold) - 0.5, 1.2, n))
    real = np.maximum(1, np.round(est * rng.uniform(0.5, 1.6, n))).astype(np.int64)
    kept = rng.random(n) < rng.choice([0.0, 0.1, 0.5, 1.0])
    eligible = kept | (real >= threshold)
    est_el = estimated_eligible(est, kept, threshold)
    budget = int(rng.uniform(0, 1.3) * int(real[eligible].sum()))
    margin = float(rng.choice([1.0, 1.1, 1.2]))
    # half the cases: some candidates come from files indexed only when the group runs dry
    later = rng.random(n) < (0.5 if seed % 2 else 0.0)
    pool = ~later

    d, tokenized, rounds = _run(priority, est_el, eligible, real, budget, margin, pool, later)
    assert rounds <= 3 + int(np.log2(max(n, 2))) + 3
    assert not (tokenized & ~pool).any()
    # the reference: every candidate of the pool (the files indexed) tokenized, then selected
    full = _select(real, eligible & pool, budget)
    assert _select(real, eligible & tokenized, budget) == full
    if d.status == EXHAUSTED:
        assert pool.all() and tokenized.all() and budget > int(real[eligible].sum())
    elif budget:
        idx = np.flatnonzero(pool)
        last = max(i for i, _ in full)
        assert last in idx[: inside(priority[idx], d.cutoff)]


def test_rounds_are_few_and_tokenize_little_past_the_need():
    """With estimates within +-20% the first round nearly always suffices, and what is
    tokenized stays close to the prefix selection needs."""
    rounds, waste = [], []
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        n = 5000
        priority = np.sort(rng.integers(0, 1 << 62, n).astype(np.uint64))
        est = np.exp(rng.normal(6.0, 1.0, n))
        real = np.round(est * rng.uniform(0.8, 1.2, n)).astype(np.int64) + 1
        kept = np.ones(n, bool)
        budget = int(0.2 * real.sum())
        tokenized = np.zeros(n, bool)
        cutoff, ext, r = None, 0, 0
        while (d := decide(priority, est, tokenized, np.where(tokenized, real, 0), budget,
                           cutoff, ext)).status == TOKENIZE:
            cutoff, ext = d.cutoff, d.extensions
            tokenized[: inside(priority, cutoff)] = True
            r += 1
        need = len({i for i, _ in _select(real, kept, budget)})
        rounds.append(r)
        waste.append(tokenized.sum() / need)
    assert np.mean(np.asarray(rounds) == 1) > 0.9
    assert np.median(waste) < 1.15
