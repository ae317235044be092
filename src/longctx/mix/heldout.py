"""Held-out evaluation documents: which documents are set aside, and how they are packed.

A document is held out when a keyed hash of its *content* falls below ``fraction``. The rule
depends only on (``seed``, text), never on the strategy, the selection seed, the files a
build happens to read or the worker count, so every mixture built from one corpus with the
same held-out settings excludes the same documents from its training rows, and a duplicate
of a held-out document (same text under another id) is held out too.

Held-out rows hold whole documents from their first token (a document longer than a row
keeps its first ``seq_len`` tokens), so a token's position in its piece is its position in
the document. Rows are filled first-fit in decreasing length; what no document fills is a
padding piece with domain ``PAD_DOMAIN``, which evaluation never scores.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

PAD_DOMAIN = -1
_TWO64 = float(1 << 64)


def heldout_draw(seed: int, text: str) -> tuple[float, int]:
    """(u in [0, 1), 64-bit priority) from a keyed hash of the document's text."""
    key = b"heldout" + int(seed).to_bytes(16, "little", signed=True)
    h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16, key=key).digest()
    return int.from_bytes(h[:8], "little") / _TWO64, int.from_bytes(h[8:], "little")


def is_heldout(u: float, fraction: float) -> bool:
    return u < fraction


def choose_heldout(
    domains: np.ndarray, lengths: np.ndarray, priorities: np.ndarray, per_domain: int, seq_len: int
) -> np.ndarray:
    """Indices of the held-out documents to evaluate: per domain, in priority order, whole
    documents (counted up to ``seq_len`` tokens each) until ``per_domain`` tokens are reached.
    Returned in (domain, priority) order."""
    order = np.lexsort((priorities, domains))
    picked = []
    for d in np.unique(domains):
        idx = order[domains[order] == d]
        n_tok = np.minimum(lengths[idx], seq_len)
        before = np.cumsum(n_tok) - n_tok  # tokens taken before each document
        picked.append(idx[before < per_domain])
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


@dataclass
class HeldoutRow:
    docs: list[int]  # document indices, in row order
    lengths: list[int]  # tokens of each document in this row (truncated to the row length)
    padding: int  # tokens of padding at the end


def pack_heldout(lengths: np.ndarray, priorities: np.ndarray, seq_len: int) -> list[HeldoutRow]:
    """First-fit-decreasing packing of whole documents into rows of ``seq_len`` tokens.

    Deterministic: documents are placed in (length desc, priority) order; rows are returned
    in creation order.
    """
    take = np.minimum(lengths, seq_len).astype(np.int64)
    order = np.lexsort((priorities, -take))
    rows: list[HeldoutRow] = []
    free: list[int] = []
    for i in order:
        n = int(take[i])
        if n < 2:  # nothing to score
            continue
        for r, space in enumerate(free):  # noqa: B007 (r is the row found, used below)
            if space >= n:
                break
        else:
            rows.append(HeldoutRow([], [], 0))
            free.append(seq_len)
            r = len(rows) - 1
        rows[r].docs.append(int(i))
        rows[r].lengths.append(n)
        free[r] -= n
    for row, space in zip(rows, free, strict=True):
        row.padding = space
    return rows
