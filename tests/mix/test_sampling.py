from __future__ import annotations

import numpy as np

from longctx.mix.sampling import doc_draws, keeps_short, piece_keys


def test_draws_depend_only_on_seed_and_doc_id():
    assert doc_draws(7, "part-00.jsonl:12") == doc_draws(7, "part-00.jsonl:12")
    assert doc_draws(7, "part-00.jsonl:12") != doc_draws(8, "part-00.jsonl:12")
    assert doc_draws(7, "part-00.jsonl:12") != doc_draws(7, "part-00.jsonl:13")


def test_keep_draw_is_uniform_and_keeps_p():
    us = np.array([doc_draws(3, f"f.jsonl:{i}")[0] for i in range(20000)])
    assert 0 <= us.min() and us.max() < 1
    assert abs(us.mean() - 0.5) < 0.01
    kept = np.mean([keeps_short(u, 0.1) for u in us])
    assert abs(kept - 0.1) < 0.006  # binomial sd 0.0021


def test_piece_keys_are_a_permutation_source():
    p = np.arange(1000, dtype=np.uint64)
    k0 = piece_keys(p, np.zeros(1000), np.zeros(1000))
    k1 = piece_keys(p, np.ones(1000), np.zeros(1000))
    assert len(np.unique(k0)) == 1000
    assert not np.array_equal(np.argsort(k0), np.arange(1000))  # actually shuffles
    assert not np.array_equal(k0, k1)  # a repeat epoch lands elsewhere
