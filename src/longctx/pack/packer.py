"""Concatenate document pieces into rows of exactly ``seq_len`` tokens.

Like the paper, rows run across document boundaries: a piece that does not fit is split,
its tail opens the next row (``continues`` = True there). Each row records where its pieces
start (``doc_offsets``), their domains, and their provenance (file, line, token offset in
the document), which is all an exporter needs to rebuild the paper's ``source`` spans.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from longctx.errors import LongctxError


class PackError(LongctxError):
    pass


@dataclass(frozen=True)
class Piece:
    """A run of tokens from one document (a whole doc, a budget-truncated prefix or a chunk)."""

    tokens: np.ndarray
    domain: int
    file: int = -1
    line: int = -1
    start: int = 0  # offset of tokens[0] inside the document's token sequence


@dataclass
class RowBatch:
    input_ids: np.ndarray  # (rows, seq_len)
    doc_offsets: list[list[int]] = field(default_factory=list)
    doc_domains: list[list[int]] = field(default_factory=list)
    continues: list[bool] = field(default_factory=list)
    piece_file: list[list[int]] = field(default_factory=list)
    piece_line: list[list[int]] = field(default_factory=list)
    piece_start: list[list[int]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.continues)

    def provenance(self) -> dict[str, list[list[int]]]:
        return {
            "piece_file": self.piece_file,
            "piece_line": self.piece_line,
            "piece_start": self.piece_start,
        }


def pack_rows(
    pieces: Iterable[Piece],
    seq_len: int,
    dtype: np.dtype,
    batch_rows: int = 64,
    drop_last: bool = False,
) -> Iterator[RowBatch]:
    """Yield batches of full rows; a partial last row is an error unless ``drop_last``."""
    if seq_len <= 0:
        raise PackError(f"seq_len must be positive, got {seq_len}")
    ids = np.empty((batch_rows, seq_len), dtype=dtype)
    batch = RowBatch(ids)
    r = 0  # row being filled, inside the batch
    fill = 0
    cont = False
    offs: list[int] = []
    doms: list[int] = []
    pf: list[int] = []
    pl: list[int] = []
    ps: list[int] = []
    for piece in pieces:
        toks = piece.tokens
        n = len(toks)
        pos = 0
        while pos < n:
            take = min(seq_len - fill, n - pos)
            ids[r, fill : fill + take] = toks[pos : pos + take]
            offs.append(fill)
            doms.append(piece.domain)
            pf.append(piece.file)
            pl.append(piece.line)
            ps.append(piece.start + pos)
            fill += take
            pos += take
            if fill == seq_len:
                offs.append(seq_len)
                batch.doc_offsets.append(offs)
                batch.doc_domains.append(doms)
                batch.continues.append(cont)
                batch.piece_file.append(pf)
                batch.piece_line.append(pl)
                batch.piece_start.append(ps)
                cont = pos < n  # the rest of this piece opens the next row
                offs, doms, pf, pl, ps = [], [], [], [], []
                fill = 0
                r += 1
                if r == batch_rows:
                    yield batch
                    ids = np.empty((batch_rows, seq_len), dtype=dtype)
                    batch = RowBatch(ids)
                    r = 0
    if fill and not drop_last:
        raise PackError(f"{fill} tokens left over: the pieces do not fill whole rows of {seq_len}")
    if r:
        batch.input_ids = ids[:r]
        yield batch
