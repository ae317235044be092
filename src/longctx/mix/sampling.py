"""Seeded per-document random draws that depend only on (seed, stable document id).

Nothing here depends on worker count, file processing order or scheduling: the keep draw
and the ordering priority of a document are both read from one keyed hash of its id, and
the packing order of a selected piece is a hash of that priority, its repeat epoch and its
chunk number.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import numpy as np

_U64 = np.uint64
_TWO64 = float(1 << 64)


def doc_draws(seed: int, doc_id: str) -> tuple[float, int]:
    """(keep draw u in [0, 1), 64-bit ordering priority) for one document."""
    h = _keyed(seed).copy()  # a copy of the keyed state: cheaper than keying each document
    h.update(doc_id.encode("utf-8"))
    d = h.digest()
    return int.from_bytes(d[:8], "little") / _TWO64, int.from_bytes(d[8:], "little")


@functools.lru_cache(maxsize=16)
def _keyed(seed: int) -> Any:
    return hashlib.blake2b(digest_size=16, key=_seed_key(seed))


def keeps_short(u: float, short_keep: float) -> bool:
    """The paper's rule for a short document: kept when its draw falls below ``short_keep``."""
    return u < short_keep


def _seed_key(seed: int) -> bytes:
    return int(seed).to_bytes(16, "little", signed=True)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of uint64 values (vectorised, wraps modulo 2**64)."""
    with np.errstate(over="ignore"):
        z = x + _U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        return z ^ (z >> _U64(31))


def piece_keys(priority: np.ndarray, epoch: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """Packing sort keys for pieces: a hash of the doc's priority, repeat epoch and chunk."""
    p = np.asarray(priority, dtype=_U64)
    e = np.asarray(epoch, dtype=_U64)
    c = np.asarray(chunk, dtype=_U64)
    with np.errstate(over="ignore"):
        return _splitmix64(_splitmix64(p ^ _splitmix64(e)) ^ c)
