"""Several needles per cell: distinct seeded needles, a score that is their mean, an interval."""

import numpy as np
import pytest

from longctx.eval.generate import EvalError
from longctx.eval.needle import NeedleConfig, make_instance
from longctx.intervals import mean_interval as trial_interval


def test_samples_draw_distinct_needles_and_sample_zero_is_unchanged():
    base = make_instance("ruler", 42, 1024, 50)
    assert make_instance("ruler", 42, 1024, 50, 0) == base
    values = {make_instance("ruler", 42, 1024, 50, k).refs for k in range(8)}
    assert len(values) == 8  # a 7-digit value per sample
    assert make_instance("ruler", 42, 1024, 50, 3) == make_instance("ruler", 42, 1024, 50, 3)


def test_samples_need_the_ruler_needle():
    with pytest.raises(EvalError, match="samples"):
        NeedleConfig(needle="paper", samples=3).validate()
    with pytest.raises(EvalError, match="samples"):
        NeedleConfig(needle="ruler", samples=0).validate()
    NeedleConfig(needle="ruler", samples=3).validate()


def test_trial_interval_brackets_the_mean_and_shrinks_with_more_needles():
    assert trial_interval(np.asarray([1.0])) is None
    few = trial_interval(np.asarray([1.0, 0.0] * 3))
    many = trial_interval(np.asarray([1.0, 0.0] * 300))
    assert few[0] <= 0.5 <= few[1] and many[0] <= 0.5 <= many[1]
    assert many[1] - many[0] < few[1] - few[0]
    assert trial_interval(np.ones(10)) == [1.0, 1.0]
