"""eval loss on real RedPajama documents of all seven domains, packed with ShardWriter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from longctx.eval.generate import EvalError
from longctx.eval.loss import LossConfig, parse_buckets, run_loss, select_rows, token_losses
from longctx.pack.shards import PackedDataset, ShardError

from .evalhelpers import build_packed

REDPAJAMA = {
    "RedPajamaArXiv",
    "RedPajamaBook",
    "RedPajamaC4",
    "RedPajamaCommonCrawl",
    "RedPajamaGithub",
    "RedPajamaStackExchange",
    "RedPajamaWikipedia",
}


def test_token_losses_match_hf_loss(smollm2_tokenizer):
    """Chunked LM head + our cross-entropy == transformers' own mean loss with labels."""
    import torch

    from longctx.eval.generate import load_eval_model

    model, _ = load_eval_model("smollm2-135m", rope_theta=None, max_length=256)
    ids = np.asarray(
        smollm2_tokenizer.encode_documents(["The quick brown fox jumps over the lazy dog. " * 6])[
            0
        ],
        dtype=np.int64,
    )
    ours = token_losses(model, ids, chunk=7)
    assert ours.shape == (len(ids) - 1,)
    with torch.inference_mode():
        ref = model(input_ids=torch.tensor(ids)[None], labels=torch.tensor(ids)[None]).loss.item()
    assert ours.mean() == pytest.approx(ref, rel=1e-4)


def test_loss_reports_all_seven_domains(tmp_path: Path, packed_redpajama: Path):
    ds = PackedDataset(packed_redpajama)
    assert set(ds.domain_vocab) == REDPAJAMA
    cfg = LossConfig(
        data=str(packed_redpajama), buckets=["0-64", "64-256"], positions=[16, 64, 128, 256]
    )
    cfg.validate()
    result = run_loss(cfg, tmp_path, progress=False)
    assert result["stage"] == "eval.loss" and result["buckets"] == ["0-64", "64-256"]
    assert set(result["domains"]) == REDPAJAMA
    for name, per in result["domains"].items():
        for bucket in ("0-64", "64-256"):
            assert per[bucket] is not None, (name, bucket)
            assert 0.5 < per[bucket] < 10.0, (name, bucket, per[bucket])
    # every target of every piece is scored exactly once (doc mode: pieces of >= 2 tokens)
    expected = sum(
        max(0, int(b) - int(a) - 1)
        for i in range(len(ds))
        for a, b in zip(ds.row(i).doc_offsets[:-1], ds.row(i).doc_offsets[1:], strict=True)
    )
    assert result["tokens"]["scored"] == expected
    assert sum(result["tokens"]["positions"].values()) == expected  # all positions < 256
    assert result["positions"]["256"] is None  # no piece is longer than 120 tokens
    # overall bucket loss is the token-weighted mean of the domain losses
    for bucket in ("0-64", "64-256"):
        counts = {d: result["tokens"]["domains"][d][bucket] for d in REDPAJAMA}
        weighted = sum(result["domains"][d][bucket] * counts[d] for d in REDPAJAMA)
        assert result["overall"][bucket] == pytest.approx(weighted / sum(counts.values()))
    # the model predicts better with more context: later positions have lower loss on average
    assert result["positions"]["128"] < result["positions"]["16"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stage"] == "eval.loss" and manifest["status"] == "done"
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_refuses_tokenizer_mismatch(tmp_path: Path, slimpajama_jsonl, smollm2_tokenizer):
    data = build_packed(
        tmp_path / "data", slimpajama_jsonl, smollm2_tokenizer, tokenizer_sha="0" * 64
    )
    cfg = LossConfig(data=str(data))
    cfg.validate()
    with pytest.raises(ShardError, match="tokenizer mismatch"):
        run_loss(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "loss.json").exists()


def test_bucket_and_row_helpers():
    assert parse_buckets(["0-4096", "4096-131072"]) == [
        ("0-4096", 0, 4096),
        ("4096-131072", 4096, 131072),
    ]
    for bad in (["4096-0"], ["x-1"], ["1-2-3"], []):
        with pytest.raises(EvalError):
            parse_buckets(bad)
    assert select_rows(5, None) == [0, 1, 2, 3, 4]
    assert select_rows(10, 3) == [0, 4, 9] or select_rows(10, 3) == [0, 5, 9]
    with pytest.raises(EvalError, match="data"):
        LossConfig().validate()


def test_row_attention_scores_every_non_document_start(tmp_path: Path, packed_redpajama: Path):
    """row mode: the packed row is one causal sequence; every target except those that
    begin a new document is scored, at its row position."""
    ds = PackedDataset(packed_redpajama)
    cfg = LossConfig(
        data=str(packed_redpajama), buckets=["0-256"], positions=[256], max_rows=2, attention="row"
    )
    cfg.validate()
    result = run_loss(cfg, tmp_path, progress=False)
    rows = select_rows(len(ds), 2)
    expected = sum(int((~ds.row(i).doc_start_mask()[1:]).sum()) for i in rows)
    assert result["tokens"]["rows"] == 2
    assert result["tokens"]["scored"] == expected
    assert result["attention"] == "row" and 0.5 < result["overall"]["0-256"] < 10.0


def test_key_token_settings_are_checked():
    for bad in (dict(key_context=0), dict(key_stride=0), dict(key_model="smollm2-135m")):
        with pytest.raises(EvalError, match="key_"):
            LossConfig(data="x", **bad).validate()
    LossConfig(data="x", key_tokens=True, key_model="smollm2-135m").validate()
