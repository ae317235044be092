from __future__ import annotations

import numpy as np
import pytest

from longctx.mix.select import Eligible, select_pieces
from longctx.pack.packer import PackError, Piece, pack_rows


def _pieces(lengths, domains):
    start = 0
    out = []
    for k, (n, d) in enumerate(zip(lengths, domains, strict=False)):
        out.append(Piece(np.arange(start, start + n, dtype=np.uint32), d, file=0, line=k + 1))
        start += n
    return out


def test_rows_cross_document_boundaries_with_offsets_and_continues():
    # docs of 3, 6, 2, 1 tokens into rows of 4: [d0 d0 d0 d1][d1 d1 d1 d1][d1 d2 d2 d3]
    batches = list(pack_rows(_pieces([3, 6, 2, 1], [0, 1, 0, 2]), 4, np.uint32, batch_rows=2))
    assert [b.rows for b in batches] == [2, 1]
    ids = np.concatenate([b.input_ids for b in batches])
    assert ids.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    offs = sum((b.doc_offsets for b in batches), [])
    assert offs == [[0, 3, 4], [0, 4], [0, 1, 3, 4]]
    assert sum((b.doc_domains for b in batches), []) == [[0, 1], [1], [1, 0, 2]]
    assert sum((b.continues for b in batches), []) == [False, True, True]
    # provenance: the piece of doc 2 (line 2) in row 1 starts at token 1 of that doc
    assert sum((b.piece_start for b in batches), []) == [[0, 0], [1], [5, 0, 0]]
    assert sum((b.piece_line for b in batches), []) == [[1, 2], [2], [2, 3, 4]]


def test_partial_last_row_is_an_error_unless_dropped():
    with pytest.raises(PackError, match="left over"):
        list(pack_rows(_pieces([3, 2], [0, 0]), 4, np.uint32))
    rows = list(pack_rows(_pieces([3, 2], [0, 0]), 4, np.uint32, drop_last=True))
    assert sum(b.rows for b in rows) == 1


def _eligible(lengths, domains):
    n = len(lengths)
    length = np.asarray(lengths, dtype=np.int64)
    return Eligible(
        file=np.zeros(n, np.int32), row=np.arange(n), line=np.arange(1, n + 1),
        start=np.cumsum(length) - length, domain=np.asarray(domains, np.int16), length=length,
        priority=np.arange(n, dtype=np.uint64)[::-1].copy(),  # reverse order of rows
    )


def test_selection_fills_budgets_exactly_in_priority_order():
    el = _eligible([10, 20, 30, 40], [0, 0, 1, 1])
    groups = {"a": np.array([0, 1]), "b": np.array([2, 3])}
    sel = select_pieces(el, groups, {"a": 25, "b": 45})
    by_doc = dict(zip(sel.doc.tolist(), sel.length.tolist(), strict=False))
    # priority reversed: group a takes doc 1 (20) then 5 tokens of doc 0; b: doc 3 (40), 5 of doc 2
    assert by_doc == {1: 20, 0: 5, 3: 40, 2: 5}
    assert sel.groups["a"].epochs == 1 and sel.groups["a"].repeated_tokens == 0


def test_selection_repeats_when_a_group_cannot_fill_its_budget():
    el = _eligible([10, 20], [0, 0])
    sel = select_pieces(el, {"a": np.array([0, 1])}, {"a": 75})
    assert int(sel.length.sum()) == 75
    g = sel.groups["a"]
    assert (g.available, g.epochs, g.repeated_tokens) == (30, 3, 45)
    assert sorted(set(sel.epoch.tolist())) == [0, 1, 2]


def test_cut_chunks_pieces_at_the_threshold():
    el = _eligible([10, 3], [0, 0])
    sel = select_pieces(el, {"a": np.array([0, 1])}, {"a": 13}, chunk=4)
    pieces = sorted(zip(sel.doc.tolist(), sel.offset.tolist(), sel.length.tolist(), strict=False))
    assert pieces == [(0, 0, 4), (0, 4, 4), (0, 8, 2), (1, 0, 3)]
