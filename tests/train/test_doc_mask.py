"""Document masking: a packed row's per-document logits equal the documents run separately."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from longctx.train.loader import IGNORE, TrainRows
from longctx.train.model import CausalLMWithLoss

from .train_fixtures import write_packed


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      use_cache=False)
    return LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa").eval()


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> TrainRows:
    folder = write_packed(tmp_path_factory.mktemp("dm") / "d", rows=4, seq_len=96, shards=1)
    return TrainRows(folder, 96, doc_mask="mask")


def _pieces(rows: TrainRows, i: int) -> list[tuple[int, int]]:
    offs = rows.data.row(i).doc_offsets.tolist()
    return list(zip(offs[:-1], offs[1:], strict=False))


def test_packed_logits_equal_separate_documents(lm, rows):
    ids, pos, _ = rows.example(0)
    pieces = _pieces(rows, 0)
    assert len(pieces) == 3
    with torch.no_grad():
        packed = lm(torch.tensor(ids)[None], position_ids=torch.tensor(pos)[None],
                    use_cache=False).logits[0]
        plain = lm(torch.tensor(ids)[None], use_cache=False).logits[0]
        for a, b in pieces:
            alone = lm(torch.tensor(ids[a:b])[None], use_cache=False).logits[0]
            torch.testing.assert_close(packed[a:b], alone, rtol=1e-4, atol=1e-4)
    # without resets (the paper's packing) later documents see earlier ones: logits differ
    a, b = pieces[1]
    assert not torch.allclose(plain[a:b], packed[a:b], atol=1e-3)


def test_positions_and_targets(rows):
    ids, pos, targets = rows.example(0)
    pieces = _pieces(rows, 0)
    for a, b in pieces:
        assert pos[a:b].tolist() == list(range(b - a))
    starts = rows.data.row(0).doc_start_mask()
    # a document's first token is never a target; everything else predicts the next id
    for t in range(len(ids) - 1):
        expected = IGNORE if starts[t + 1] else ids[t + 1]
        assert targets[t] == expected
    assert targets[-1] == IGNORE
    none_rows = TrainRows(rows.data.folder, 96, doc_mask="none")
    _, _, t2 = none_rows.example(0)
    assert (t2[:-1] == ids[1:]).all() and none_rows.batch([0]).position_ids is None


def test_masked_loss_is_sum_of_separate_document_losses(lm, rows):
    ids, pos, targets = rows.example(0)
    wrapper = CausalLMWithLoss(lm, ce_chunk=32)
    with torch.no_grad():
        total, count = wrapper(torch.tensor(ids)[None], torch.tensor(pos)[None],
                               torch.tensor(targets)[None])
        expected, n = 0.0, 0
        for a, b in _pieces(rows, 0):
            logits = lm(torch.tensor(ids[a:b])[None], use_cache=False).logits[0, :-1]
            tgt = torch.tensor(ids[a + 1 : b])
            expected += torch.nn.functional.cross_entropy(logits, tgt, reduction="sum").item()
            n += b - a - 1
    assert int(count) == n
    assert abs(float(total) - expected) / expected < 1e-5


def test_split_rows_reset_positions(tmp_path: Path):
    folder = write_packed(tmp_path / "d", rows=2, seq_len=128, shards=1)
    full = TrainRows(folder, 128, doc_mask="mask")
    half = TrainRows(folder, 64, doc_mask="mask")
    assert len(half) == 2 * len(full)
    ids, pos, tgt = full.example(1)
    for part in (0, 1):
        i2, p2, t2 = half.example(2 + part)
        lo = part * 64
        assert np.array_equal(i2, ids[lo : lo + 64])
        assert p2[0] == 0
        cuts = [c - lo for c in full.data.row(1).doc_offsets if lo < c < lo + 64]
        for c in cuts:
            assert p2[c] == 0
        assert np.array_equal(t2[:-1], tgt[lo : lo + 63])
