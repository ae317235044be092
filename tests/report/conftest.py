"""Fixtures: complete run directories written by hand in the contract formats
(see report_fixtures.py), one with stage PNGs and a pair for the comparison view."""

from __future__ import annotations

from pathlib import Path

import pytest

from .report_fixtures import BASE_LOSS, PER_SOURCE_DIFF, make_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run-a", with_pngs=True, loss_values=BASE_LOSS)


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = make_run(tmp_path / "original", with_pngs=False, loss_values=BASE_LOSS)
    other = {d: (BASE_LOSS[d][0] + PER_SOURCE_DIFF[d][0], BASE_LOSS[d][1] + PER_SOURCE_DIFF[d][1])
             for d in BASE_LOSS}
    b = make_run(tmp_path / "per_source", with_pngs=False, loss_values=other)
    return a, b
