"""Noise intervals: hand-checkable cases for the bootstrap rules."""

import numpy as np

from longctx.intervals import mean_interval, paired_loss_difference, ratio_interval, spread


def _loss(ids, domains, sums, counts):
    return {"buckets": ["0-4", "4-8"],
            "per_document": {"id": ids, "domain": domains,
                             "bucket_sums": [[s, 0.0] for s in sums],
                             "bucket_counts": [[c, 0] for c in counts]}}


def test_ratio_interval_is_token_weighted_and_needs_two_documents():
    assert ratio_interval(np.asarray([3.0]), np.asarray([1])) is None
    lo, hi = ratio_interval(np.asarray([2.0, 2.0, 2.0]), np.asarray([1, 1, 1]))
    assert lo == hi == 2.0  # identical documents: no spread
    lo, hi = ratio_interval(np.asarray([1.0, 30.0]), np.asarray([1, 10]))
    assert 1.0 <= lo <= 31 / 11 <= hi <= 3.0


def test_paired_difference_sees_a_shift_that_unpaired_noise_would_hide():
    rng = np.random.default_rng(1)
    base = rng.uniform(1.0, 5.0, 40)  # documents differ a lot from each other ...
    counts = [100] * 40
    before = _loss([f"{i}:0" for i in range(40)], ["a"] * 40, list(base * 100), counts)
    after = _loss([f"{i}:0" for i in range(40)], ["a"] * 40, list((base - 0.05) * 100), counts)
    d = paired_loss_difference(before, after, "0-4")
    assert abs(d["difference"] + 0.05) < 1e-9  # ... but each improved by exactly 0.05
    assert d["beyond_noise"] and d["interval95"][1] < 0 and d["documents"] == 40
    unpaired = ratio_interval(np.asarray(base * 100), np.asarray(counts))
    assert unpaired[1] - unpaired[0] > 0.1  # the per-model interval is far wider than 0.05


def test_paired_difference_within_noise_and_missing_documents():
    before = _loss(["0:0", "1:0", "2:0"], ["a", "a", "b"], [100.0, 300.0, 200.0], [100] * 3)
    after = _loss(["0:0", "1:0", "9:9"], ["a", "a", "b"], [150.0, 250.0, 1.0], [100] * 3)
    d = paired_loss_difference(before, after, "0-4")
    assert d["documents"] == 2 and d["difference"] == 0.0 and not d["beyond_noise"]
    assert paired_loss_difference(before, after, "4-8") is None  # no tokens in that bucket
    assert paired_loss_difference(before, after, "0-4", domain="b") is None
    assert paired_loss_difference({}, after, "0-4") is None


def test_mean_interval_and_spread():
    assert mean_interval([1.0]) is None
    assert mean_interval([1.0, 1.0, 1.0]) == [1.0, 1.0]
    assert spread([1.0]) is None
    s = spread([1.0, 1.5, None, 2.0])
    assert s["range"] == 1.0 and s["n"] == 3 and abs(s["std"] - 0.5) < 1e-12
