"""Training rows from packed shards, in a seeded global order that survives resume and resizing.

The order is one stream: epoch e is the permutation ``rng(seed, e)`` of all rows; optimizer
step s takes stream positions ``[s*R, (s+1)*R)`` with R rows per step (global, independent of
the world size). Rank r of W takes every W-th row of that slice. So the state is just
``(seed, epoch, step)``; resuming at step s, or rerunning with another W, sees exactly the
same rows per step and every row once per epoch.

A stored row of S tokens is split into S/L training rows when ``seq_len`` L < S.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longctx.pack.shards import PackedDataset

IGNORE = -100


@dataclass
class Batch:
    """One micro-batch as numpy arrays, shape (rows, seq_len)."""

    input_ids: np.ndarray  # int64
    position_ids: np.ndarray | None  # int64; None = 0..L-1 (no document resets)
    targets: np.ndarray  # int64, next-token ids, IGNORE where not scored

    @property
    def scored(self) -> int:
        return int((self.targets != IGNORE).sum())


class TrainRows:
    """Random access to training rows of length ``seq_len`` (pieces of stored rows)."""

    def __init__(self, folder: str | Path, seq_len: int | None = None, doc_mask: str = "none",
                 stages: tuple[str, ...] = ("data.build",)):
        self.data = PackedDataset(folder, stages=stages)
        self.seq_len = seq_len or self.data.seq_len
        if self.data.seq_len % self.seq_len:
            raise ValueError(f"seq_len {self.seq_len} does not divide {self.data.seq_len}")
        self.split = self.data.seq_len // self.seq_len
        self.doc_mask = doc_mask

    def __len__(self) -> int:
        return len(self.data) * self.split

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input_ids, position_ids with per-document resets, targets) of training row i."""
        stored, part = divmod(int(i), self.split)
        row = self.data.row(stored)
        lo, hi = part * self.seq_len, (part + 1) * self.seq_len
        ids = row.input_ids[lo:hi].astype(np.int64)
        starts_full = row.doc_start_mask()[lo:hi]
        # position resets at every piece boundary inside the window, and at the window start
        offsets = row.doc_offsets
        cuts = offsets[(offsets > lo) & (offsets < hi)] - lo
        boundaries = np.concatenate([[0], cuts]).astype(np.int64)
        lengths = np.diff(np.concatenate([boundaries, [self.seq_len]]))
        positions = np.arange(self.seq_len, dtype=np.int64) - np.repeat(boundaries, lengths)
        targets = np.full(self.seq_len, IGNORE, dtype=np.int64)
        targets[:-1] = ids[1:]
        if self.doc_mask == "mask":
            # do not score a document's first token from the previous document's context
            targets[:-1][starts_full[1:]] = IGNORE
        return ids, positions, targets

    def batch(self, rows: list[int] | np.ndarray) -> Batch:
        parts = [self.example(i) for i in rows]
        ids = np.stack([p[0] for p in parts])
        targets = np.stack([p[2] for p in parts])
        positions = np.stack([p[1] for p in parts]) if self.doc_mask == "mask" else None
        return Batch(ids, positions, targets)


class GlobalSampler:
    """Seeded epoch permutations over ``num_rows``; state ``(seed, epoch, step)``."""

    def __init__(self, num_rows: int, rows_per_step: int, seed: int, step: int = 0) -> None:
        if num_rows <= 0:
            raise ValueError("no rows to sample from")
        self.num_rows = num_rows
        self.rows_per_step = rows_per_step
        self.seed = seed
        self.step = step
        self._perm_cache: dict[int, np.ndarray] = {}

    @property
    def epoch(self) -> int:
        return (self.step * self.rows_per_step) // self.num_rows

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            if len(self._perm_cache) > 2:
                self._perm_cache.clear()
            rng = np.random.default_rng([self.seed, epoch])
            self._perm_cache[epoch] = rng.permutation(self.num_rows)
        return self._perm_cache[epoch]

    def rows_for_step(self, step: int) -> np.ndarray:
        """All R global row ids of optimizer step ``step`` (0-based)."""
        pos = np.arange(step * self.rows_per_step, (step + 1) * self.rows_per_step)
        epochs, within = np.divmod(pos, self.num_rows)
        return np.array([self.permutation(int(e))[w] for e, w in zip(epochs, within, strict=False)])

    def rank_rows(self, step: int, rank: int, world: int) -> np.ndarray:
        """This rank's share of step ``step``: every ``world``-th row."""
        return self.rows_for_step(step)[rank::world]

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "step": self.step,
                "num_rows": self.num_rows, "rows_per_step": self.rows_per_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("seed", "num_rows", "rows_per_step"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"sampler state {key}={state[key]} differs from this run's {getattr(self, key)}"
                )
        self.step = int(state["step"])


def micro_batches(rows: np.ndarray, micro: int) -> list[np.ndarray]:
    return [rows[i : i + micro] for i in range(0, len(rows), micro)]
