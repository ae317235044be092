"""Choose the pieces to pack from the eligible documents of the files read.

Per budget group (a domain, or everything for ``global``): take eligible documents in
priority order (a seeded hash of their id) until the group's budget is met exactly; the
last document is truncated to the remaining tokens. A group whose eligible documents hold
fewer tokens than its budget repeats them (epoch 1, 2, ... in the same order). ``cut``
then splits every piece into chunks of ``long_threshold`` tokens. The packing order is a
hash of (priority, epoch, chunk): a seeded shuffle independent of how the scan ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from longctx.errors import LongctxError
from longctx.mix.sampling import piece_keys

# Repeating a group's documents more often than this is never a mixture, only a mistake
# (``--tokens 100T`` on a small corpus), and each pass costs memory: refuse it.
MAX_PASSES = 1000
# doc_offsets are int32, and a row is held in memory whole while it is packed.
MAX_SEQ_LEN = (1 << 31) - 1


class SelectError(LongctxError):
    """A budget the eligible documents cannot sensibly fill, or output that cannot fit."""


def passes_needed(budget: int, available: int) -> int:
    """Passes over ``available`` eligible tokens that a budget of ``budget`` tokens takes."""
    return -(-int(budget) // int(available)) if available > 0 else 0


def check_budgets(
    budgets: Mapping[str, int], available: Mapping[str, int], max_passes: int = MAX_PASSES
) -> None:
    """Refuse budgets that would repeat a group's eligible documents more than ``max_passes``
    times (one line naming the group), before any memory is spent on the repeats."""
    for key in sorted(budgets):
        budget, have = int(budgets[key]), int(available.get(key, 0))
        passes = passes_needed(budget, have)
        if budget and passes > max_passes:
            raise SelectError(
                f"{'all domains' if key == '*' else key}: a budget of {budget:,} tokens would "
                f"repeat its {have:,} eligible tokens {passes:,} times (limit {max_passes:,}); "
                "lower --tokens or give more input"
            )


def check_output_size(
    rows: int,
    seq_len: int,
    itemsize: int,
    *,
    free_disk: int | None = None,
    memory: int | None = None,
) -> None:
    """Refuse a build whose rows cannot exist: ``seq_len`` beyond the int32 ``doc_offsets``,
    one row larger than ``memory`` bytes (it is packed in memory), or all rows larger than
    ``free_disk`` bytes. Pure: the caller measures disk and memory."""
    if not 0 < seq_len <= MAX_SEQ_LEN:
        raise SelectError(f"seq_len: {seq_len:,} is outside 1..{MAX_SEQ_LEN:,} "
                          "(document offsets are int32)")
    row_bytes = int(seq_len) * int(itemsize)
    if memory is not None and row_bytes > memory:
        raise SelectError(f"seq_len: one row of {seq_len:,} tokens takes {_size(row_bytes)}, "
                          f"more than the {_size(memory)} of memory")
    total = int(rows) * row_bytes
    if free_disk is not None and total > free_disk:
        raise SelectError(f"tokens: {rows:,} rows x {seq_len:,} tokens take {_size(total)}, more "
                          f"than the {_size(free_disk)} free on the output disk")


def _size(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


@dataclass
class Eligible:
    """Compact per-document arrays for every eligible document of the files read."""

    file: np.ndarray  # int32: index into the manifest ``files``
    row: np.ndarray  # int64: row in that file's spill metadata
    line: np.ndarray  # int64: 1-based line in the corpus file
    start: np.ndarray  # int64: token offset of the doc in that file's spill
    domain: np.ndarray  # int16 (int32 past 32,768 domains): index into the vocabulary
    length: np.ndarray  # int64: tokens of the whole document (with BOS/EOS)
    priority: np.ndarray  # uint64

    def __len__(self) -> int:
        return len(self.file)


@dataclass
class GroupResult:
    budget: int
    available: int  # eligible tokens in the files read
    epochs: int  # passes over the eligible docs (1 = no repetition)
    repeated_tokens: int  # tokens beyond the first pass


@dataclass
class Selection:
    """Pieces in packing order: doc index into Eligible, token offset in doc, length."""

    doc: np.ndarray  # int64 index into Eligible arrays
    offset: np.ndarray  # int64 token offset inside the document
    length: np.ndarray  # int64 tokens
    epoch: np.ndarray  # int32
    groups: dict[str, GroupResult]


def _select_group(
    idx: np.ndarray, el: Eligible, budget: int
) -> tuple[list[np.ndarray], GroupResult]:
    order = idx[np.lexsort((el.row[idx], el.file[idx], el.priority[idx]))]
    lengths = el.length[order]
    total = int(lengths.sum())
    if budget == 0:
        return [], GroupResult(0, total, 0, 0)
    full_epochs, rem = divmod(budget, total)
    parts: list[np.ndarray] = []  # rows of (doc, take, epoch)
    for e in range(full_epochs):
        parts.append(np.stack([order, lengths, np.full_like(order, e)], axis=1))
    if rem:
        cum = np.cumsum(lengths)
        k = int(np.searchsorted(cum, rem, side="left"))  # doc k completes the budget
        takes = lengths[: k + 1].copy()
        takes[k] = rem - (int(cum[k - 1]) if k else 0)
        parts.append(np.stack([order[: k + 1], takes, np.full(k + 1, full_epochs)], axis=1))
    epochs = full_epochs + (1 if rem else 0)
    return parts, GroupResult(budget, total, epochs, max(0, budget - total))


def select_pieces(
    el: Eligible,
    groups: dict[str, np.ndarray],
    budgets: dict[str, int],
    chunk: int | None = None,
) -> Selection:
    """Exact-budget selection. ``groups`` maps a budget key to the Eligible indices in it.

    Raises :class:`SelectError` when a budget needs more than ``MAX_PASSES`` repeats."""
    check_budgets(budgets, {k: int(el.length[idx].sum()) for k, idx in groups.items()})
    parts: list[np.ndarray] = []
    results: dict[str, GroupResult] = {}
    for key in sorted(budgets):
        idx = groups.get(key, np.empty(0, dtype=np.int64))
        if budgets[key] and not len(idx):
            raise SelectError(f"group {key} has a budget but no eligible documents")
        p, res = _select_group(idx, el, int(budgets[key]))
        parts += p
        results[key] = res
    table = np.concatenate(parts) if parts else np.empty((0, 3), dtype=np.int64)
    doc, take, epoch = table[:, 0], table[:, 1], table[:, 2]
    if chunk:
        n_chunks = -(-take // chunk)
        doc = np.repeat(doc, n_chunks)
        epoch = np.repeat(epoch, n_chunks)
        first = np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
        c = np.arange(len(doc)) - first
        offset = c * chunk
        length = np.minimum(chunk, np.repeat(take, n_chunks) - offset)
    else:
        c = np.zeros(len(doc), dtype=np.int64)
        offset = np.zeros(len(doc), dtype=np.int64)
        length = take
    keys = piece_keys(el.priority[doc], epoch, c)
    order = np.lexsort((c, epoch, el.row[doc], el.file[doc], keys))
    return Selection(
        doc=doc[order].astype(np.int64),
        offset=offset[order].astype(np.int64),
        length=length[order].astype(np.int64),
        epoch=epoch[order].astype(np.int32),
        groups=results,
    )
