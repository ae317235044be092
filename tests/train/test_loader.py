"""The global sampler: once per epoch, world-size invariant, resumable from (seed, epoch, step)."""

from __future__ import annotations

import numpy as np

from longctx.train.loader import GlobalSampler, TrainRows, micro_batches


def test_each_row_once_per_epoch_and_epochs_differ():
    s = GlobalSampler(num_rows=12, rows_per_step=4, seed=3)
    epoch0 = np.concatenate([s.rows_for_step(k) for k in range(3)])
    epoch1 = np.concatenate([s.rows_for_step(k) for k in range(3, 6)])
    assert sorted(epoch0.tolist()) == list(range(12)) == sorted(epoch1.tolist())
    assert not np.array_equal(epoch0, epoch1)
    s.step = 4
    assert s.state_dict()["epoch"] == 1


def test_rows_crossing_an_epoch_boundary():
    s = GlobalSampler(num_rows=10, rows_per_step=4, seed=0)
    stream = np.concatenate([s.rows_for_step(k) for k in range(5)])  # 20 rows = 2 epochs
    assert sorted(stream[:10].tolist()) == list(range(10))
    assert sorted(stream[10:].tolist()) == list(range(10))


def test_world_size_changes_nothing_per_step():
    s = GlobalSampler(num_rows=64, rows_per_step=8, seed=11)
    for step in range(10):
        one = s.rank_rows(step, 0, 1)
        two = np.concatenate([s.rank_rows(step, r, 2) for r in range(2)])
        four = np.concatenate([s.rank_rows(step, r, 4) for r in range(4)])
        assert sorted(one) == sorted(two) == sorted(four)


def test_resume_state_reproduces_order():
    a = GlobalSampler(num_rows=50, rows_per_step=5, seed=9)
    a.step = 7
    b = GlobalSampler(num_rows=50, rows_per_step=5, seed=9)
    b.load_state_dict(a.state_dict())
    assert b.step == 7
    for k in range(7, 15):
        assert np.array_equal(a.rows_for_step(k), b.rows_for_step(k))
    other = GlobalSampler(num_rows=50, rows_per_step=5, seed=10)
    assert not np.array_equal(other.rows_for_step(7), a.rows_for_step(7))


def test_micro_batches_and_rows(packed_dir):
    rows = TrainRows(packed_dir, 64)
    assert len(rows) == 32 and rows.split == 2
    mb = micro_batches(np.arange(6), 2)
    assert [m.tolist() for m in mb] == [[0, 1], [2, 3], [4, 5]]
    b = rows.batch([0, 5])
    assert b.input_ids.shape == (2, 64) and b.targets.shape == (2, 64)
    assert b.scored == 2 * 63
