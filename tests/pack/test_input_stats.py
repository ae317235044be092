"""Input token estimates from pass 1's counts, sample and candidates (hand-computed)."""

from __future__ import annotations

import numpy as np

from longctx.mix.input_stats import InputStats
from longctx.pack.index import INDEX_KEYS


def _summary(**per_domain):
    stats = {}
    for d, st in per_domain.items():
        full = {k: 0 for k in INDEX_KEYS}
        full.update(st)
        stats[d] = full
    return {"stats": stats, "domains": sorted(per_domain), "skipped": {"malformed_json": 1}}


def test_estimates_from_the_sample_ratio_and_candidate_bytes():
    s = InputStats(specials=1, threshold=100)
    # A: 10 docs, 1000 bytes; sample: 2 docs, 200 bytes, 52 tokens -> (52 - 2) / 200 = 0.25
    # candidates 400 / 300 / 500 bytes -> 101 / 76 / 126 estimated tokens; the 300-byte one
    # is kept. B has no sample: the mean ratio of the others (0.25).
    s.add(_summary(A=dict(docs=10, bytes=1000, sample_docs=2, sample_bytes=200,
                          sample_tokens=52),
                   B=dict(docs=1, bytes=40)),
          domain=np.asarray([0, 0, 0, 1]), nbytes=np.asarray([400, 300, 500, 40]),
          kept=np.asarray([False, True, False, True]))
    e = s.estimate()
    assert s.ratios() == {"A": 0.25, "B": 0.25}
    a = e["A"]
    assert a["tokens"] == 1000 * 0.25 + 10  # bytes x ratio + one BOS a document
    assert a["long_tokens"] == 101 + 126  # estimates at or above the threshold
    assert a["short_tokens"] == 260 - 227
    assert a["eligible_tokens"] == 101 + 76 + 126  # long by estimate, or kept
    assert a["estimated"] and e["B"]["tokens"] == 11 and e["B"]["eligible_tokens"] == 11
    assert s.eligible("A") == 303 and s.eligible("*") == 314 and s.eligible("C") == 0
    assert s.token_weights() == {"A": 260.0, "B": 11.0}
    assert s.skipped["malformed_json"] == 1


def test_split_by_code_keeps_order():
    from longctx.mix.input_stats import split_by_code

    parts = split_by_code(np.asarray([2, 0, 2, 1, 0]), 4)
    assert [p.tolist() for p in parts] == [[1, 4], [3], [0, 2], []]


def test_more_files_add_up_and_real_counts_replace_estimates():
    s = InputStats(specials=0, threshold=50)
    for _ in range(2):  # two files, one candidate of 300 bytes each, both kept
        s.add(_summary(A=dict(docs=1, bytes=300, sample_docs=1, sample_bytes=100,
                              sample_tokens=30)),
              domain=np.asarray([0]), nbytes=np.asarray([300]), kept=np.asarray([True]))
    e = s.estimate()["A"]
    assert e["docs"] == 2 and e["tokens"] == 180 and e["long_tokens"] == 180
    assert s.eligible("A") == 180 and e["tokenized_docs"] == 0
    # one tokenized (100 real tokens): a kept candidate joins the uniform sample, so the
    # ratio is (60 + 100) / (200 + 300) = 0.32; the other is estimated at 300 x 0.32 = 96
    s.set_candidates(["A"], np.asarray([0, 0]), np.asarray([300, 300]),
                     np.asarray([True, True]), np.asarray([100, -1]))
    e = s.estimate()["A"]
    assert s.ratios()["A"] == 0.32
    assert (e["tokens"], e["long_tokens"], e["eligible_tokens"], e["tokenized_docs"]) == (
        196, 196, 196, 1)
    assert e["estimated"]
    # every document tokenized: nothing is estimated any more
    s.set_candidates(["A"], np.asarray([0, 0]), np.asarray([300, 300]),
                     np.asarray([True, False]), np.asarray([100, 40]))
    e = s.estimate()["A"]
    assert (e["tokens"], e["long_tokens"], e["eligible_tokens"], e["estimated"]) == (
        140, 100, 100, False)  # the 40-token one is short and not kept: not eligible
    assert s.token_weights() == {"A": 140.0}


def test_no_sample_anywhere_falls_back():
    s = InputStats(specials=1, threshold=10)
    s.add(_summary(A=dict(docs=1, bytes=100)), domain=np.asarray([0]),
          nbytes=np.asarray([100]), kept=np.asarray([False]))
    assert s.ratios() == {"A": 0.25}
    assert s.estimate()["A"]["tokens"] == 26
