"""Fixtures: tiny packed folders (see train_fixtures.write_packed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .train_fixtures import write_packed


@pytest.fixture(scope="session")
def packed_dir(tmp_path_factory) -> Path:
    return write_packed(tmp_path_factory.mktemp("packed") / "data", rows=16, seq_len=128)


@pytest.fixture(scope="session")
def eval_dir(tmp_path_factory) -> Path:
    return write_packed(tmp_path_factory.mktemp("packed") / "eval", rows=4, seq_len=128, seed=7)
