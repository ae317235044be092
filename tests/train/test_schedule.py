"""Learning-rate schedule: linear warmup, then constant (the paper's) or cosine to a floor."""

from __future__ import annotations

import math

import pytest

from longctx.train.config import TrainConfig
from longctx.train.loop import lr_at


def test_constant_with_warmup():
    cfg = TrainConfig(lr=2e-5, warmup_steps=4)
    got = [lr_at(s, cfg, 100) for s in range(5)]
    assert got == pytest.approx([5e-6, 1e-5, 1.5e-5, 2e-5, 2e-5], rel=1e-12)
    assert lr_at(99, cfg, 100) == 2e-5


def test_cosine_endpoints_and_midpoint():
    cfg = TrainConfig(lr=1e-3, schedule="cosine", min_lr_ratio=0.1, warmup_steps=10)
    assert math.isclose(lr_at(10, cfg, 110), 1e-3)
    assert math.isclose(lr_at(60, cfg, 110), 1e-4 + 0.5 * 9e-4)  # halfway: mean of peak, floor
    assert math.isclose(lr_at(110, cfg, 110), 1e-4)


def test_tokens_to_steps():
    cfg = TrainConfig(tokens="5B", batch_tokens="3932160", seq_len=81920)
    # the paper preset: 5B tokens in ~4M-token batches = 1,272 steps (rounded up)
    assert cfg.resolved_batch_tokens() == 48 * 81920
    assert cfg.resolved_steps() == math.ceil(5e9 / 3932160) == 1272
