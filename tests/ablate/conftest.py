"""Fixtures: a small corpus and ONE finished CPU ablation (configs/ablate-cpu.yaml, three arms
x two seeds) shared by the tests of this folder; tests that rerun it leave it as they found it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .ablate_corpus import make_corpus
from .ablate_helpers import cpu_config


@pytest.fixture(scope="session")
def one_torch_thread():
    """One intra-op thread: the same arithmetic in every process (and faster on 2 shared cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ablate_corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("ablate_corpus") / "corpus")


@dataclass
class Finished:
    dir: Path
    result: dict[str, Any]
    lines: list[str]
    seconds: float


@pytest.fixture(scope="session")
def finished(tmp_path_factory, ablate_corpus, one_torch_thread) -> Finished:
    """The CPU preset run once, uninterrupted, in-process."""
    import time

    from longctx.ablate.run import run_ablation

    out = tmp_path_factory.mktemp("ablation") / "run"
    lines: list[str] = []
    t0 = time.perf_counter()
    result = run_ablation(cpu_config(out, ablate_corpus), echo=lines.append)
    return Finished(out, result, lines, time.perf_counter() - t0)
