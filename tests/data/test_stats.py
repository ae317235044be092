from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from longctx.data.readers import iter_documents
from longctx.data.stats import (
    StatsConfig,
    compute_stats,
    length_percentiles,
    long_token_fraction,
    run_stats,
)

from .datahelpers import record, write_lines

# Known lengths (in words = tokens of the word tokenizer) per domain.
LENGTHS = {"A": [10, 100, 5000, 8000, 4096], "B": [1, 2, 3, 4, 5, 6, 7, 8, 9, 4095], "C": [700]}


def _known_corpus(root: Path) -> Path:
    lines = []
    for dom, lengths in LENGTHS.items():
        lines += [record(" ".join(["w"] * k), dom) for k in lengths]
    lines.append("{not json")
    write_lines(root / "a.jsonl", lines[::2])
    write_lines(root / "b.jsonl.zst", lines[1::2], "zst")
    return root


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_pure_helpers_against_numpy_and_hand_values():
    x = np.asarray([1, 2, 3, 4, 5, 6, 7, 8, 9, 4095])
    p = length_percentiles(x)
    for q in (10, 25, 50, 75, 90, 99):
        assert p[f"p{q}"] == pytest.approx(float(np.percentile(x, q)))
    assert p["max"] == 4095
    a = np.asarray([10, 100, 5000, 8000, 4096])
    assert long_token_fraction(a, 4096) == pytest.approx((5000 + 8000 + 4096) / 17206)
    assert long_token_fraction(a, 4097) == pytest.approx(13000 / 17206)


def test_stats_json_on_known_lengths(tmp_path, word_tokenizer_dir):
    corpus = _known_corpus(tmp_path / "corpus")
    cfg = StatsConfig(inputs=[str(corpus)], out=str(tmp_path / "out"),
                      tokenizer=str(word_tokenizer_dir), workers=2)
    run_stats(cfg, progress=False)
    s = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert s["stage"] == "data.stats" and s["sampled"] is False and s["long_threshold"] == 4096
    total = sum(sum(v) for v in LENGTHS.values())
    assert s["total_tokens"] == total and s["total_docs"] == 16
    assert list(s["domains"]) == ["A", "B", "C"]  # by tokens, largest first
    assert s["skipped"] == {"malformed_json": 1}
    for dom, lengths in LENGTHS.items():
        d = s["domains"][dom]
        arr = np.asarray(lengths)
        assert d["docs"] == len(lengths) and d["tokens"] == arr.sum()
        assert d["token_share"] == pytest.approx(arr.sum() / total)
        assert d["long_token_fraction"] == pytest.approx(arr[arr >= 4096].sum() / arr.sum())
        assert d["chars_per_token"] == pytest.approx((2 * arr - 1).sum() / arr.sum())
        assert set(d["length_percentiles"]) == {"p10", "p25", "p50", "p75", "p90", "p99", "max"}
        for q in (10, 25, 50, 75, 90, 99):
            assert d["length_percentiles"][f"p{q}"] == pytest.approx(np.percentile(arr, q))
        assert d["length_percentiles"]["max"] == arr.max()
    assert s["domains"]["B"]["long_token_fraction"] == 0.0  # 4095 < 4096
    assert s["domains"]["A"]["long_docs"] == 3
    assert _png_size(tmp_path / "out" / "stats.png") == (1300, 460)
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["stage"] == "data.stats" and m["status"] == "done" and m["config_hash"]
    assert m["domains"] == s["domains"]

    # Same config again: skipped. A different threshold: recomputed.
    before = (tmp_path / "out" / "manifest.json").read_bytes()
    run_stats(cfg, progress=False)
    assert (tmp_path / "out" / "manifest.json").read_bytes() == before
    cfg.long_threshold = 100
    s2 = run_stats(cfg, progress=False)
    assert s2["domains"]["A"]["long_token_fraction"] == pytest.approx(17196 / 17206)


def test_demo_corpus_has_four_domains_with_different_length_profiles(demo_small, tmp_path):
    s = run_stats(StatsConfig(inputs=[str(demo_small)], out=str(tmp_path / "s")), progress=False)
    doms = s["domains"]
    assert len(doms) >= 4
    med = {n: d["length_percentiles"]["p50"] for n, d in doms.items()}
    # Short API prose < reference prose < module source < whole packages.
    assert med["Docstrings"] < 150 < med["ReferenceManual"] < 1500 < med["StdlibModules"]
    assert med["StdlibModules"] * 3 < med["StdlibPackages"]
    assert len(set(med.values())) == len(med)
    # The long-token fraction orders the same way at the paper's threshold.
    ltf = {n: d["long_token_fraction"] for n, d in doms.items()}
    assert ltf["Docstrings"] < 0.2 < ltf["StdlibModules"] and ltf["StdlibPackages"] > 0.9
    assert sum(d["token_share"] for d in doms.values()) == pytest.approx(1.0)


def test_sampled_stats_are_close_to_exact_on_redpajama(slimpajama_jsonl, tmp_path):
    exact = run_stats(StatsConfig(inputs=[str(slimpajama_jsonl)], out=str(tmp_path / "e"),
                                  long_threshold=2048), progress=False)
    samp = run_stats(StatsConfig(inputs=[str(slimpajama_jsonl)], out=str(tmp_path / "s"),
                                 long_threshold=2048, sample_docs=250, seed=1), progress=False)
    assert exact["sampled"] is False and samp["sampled"] is True
    assert 150 < samp["tokenized_docs"] < 350
    assert samp["total_docs"] == exact["total_docs"] == 536
    assert samp["total_tokens"] == pytest.approx(exact["total_tokens"], rel=0.05)
    for name, e in exact["domains"].items():
        d = samp["domains"][name]
        assert d["docs"] == e["docs"] and d["chars"] == e["chars"]  # exact counts
        assert d["tokens_estimated"] is True
        assert d["token_share"] == pytest.approx(e["token_share"], abs=0.03), name
        assert d["chars_per_token"] == pytest.approx(e["chars_per_token"], rel=0.2), name
        # Tail statistics see every document through its character length.
        assert d["long_token_fraction"] == pytest.approx(e["long_token_fraction"], abs=0.06), name
        assert d["length_percentiles"]["max"] == pytest.approx(
            e["length_percentiles"]["max"], rel=0.3
        ), name
    # Big domains: the estimated median is near the exact one.
    for name in ("RedPajamaC4", "RedPajamaStackExchange", "RedPajamaGithub"):
        e, d = exact["domains"][name], samp["domains"][name]
        assert d["length_percentiles"]["p50"] == pytest.approx(
            e["length_percentiles"]["p50"], rel=0.15
        )
    exact_docs = sum(1 for _ in iter_documents([slimpajama_jsonl]))
    assert exact["total_docs"] == exact_docs


@pytest.fixture(scope="module")
def llama2_dir(llama2_tokenizer_model, tmp_path_factory):
    pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("llama2")
    shutil.copy(llama2_tokenizer_model, folder / "tokenizer.model")
    return folder


def test_stats_match_reference_table_with_llama2(redpajama_samples, llama2_dir, tmp_path):
    """SOURCE.md's table (LLaMA-2 tokens + BOS, long = more than 4096 tokens)."""
    cfg = StatsConfig(
        inputs=[str(redpajama_samples / "cc"), str(redpajama_samples / "wiki")],
        out=str(tmp_path / "s"),
        tokenizer=str(llama2_dir),
        domain_field="@dir",
        long_threshold=4097,
    )
    s = run_stats(cfg, progress=False)
    cc, wiki = s["domains"]["cc"], s["domains"]["wiki"]
    assert (cc["docs"], wiki["docs"]) == (20, 20)
    assert cc["length_percentiles"]["p50"] == pytest.approx(1428, abs=0.5)
    assert wiki["length_percentiles"]["p50"] == pytest.approx(2964, abs=0.5)
    assert cc["chars_per_token"] == pytest.approx(3.643, abs=5e-4)
    assert wiki["chars_per_token"] == pytest.approx(2.389, abs=5e-4)
    assert cc["long_token_fraction"] == pytest.approx(0.597, abs=5e-4)
    assert wiki["long_token_fraction"] == pytest.approx(0.666, abs=5e-4)
    assert s["tokenizer"]["vocab_size"] == 32000
    # Table columns "docs with tokens > 4096" and "docs est >= 4096" (len(text) / 3.68).
    assert (cc["long_docs"], wiki["long_docs"]) == (3, 4)
    assert (cc["long_docs_chars_estimate"], wiki["long_docs_chars_estimate"]) == (3, 4)


def test_sampled_estimates_hand_computed():
    from collections import Counter

    from longctx.data.lengths import LengthScan, _histogram

    # Domain A: 10 docs (20, 60 and eight of 40 chars); the sample (20 -> 5 tokens, 60 -> 15)
    # says 4 chars per token. Domain B: 2 docs of 200 chars, none sampled: corpus ratio (4).
    a_chars, b_chars = [20, 60] + [40] * 8, [200, 200]
    scan = LengthScan(
        files=["f"], domains=["A", "B"], file_id=np.zeros(2, np.int32),
        domain=np.zeros(2, np.int16), index=np.asarray([1, 2]), tokens=np.asarray([5, 15]),
        bytes=np.asarray([20, 60]), chars=np.asarray([20, 60]), skipped=Counter(),
        totals={"A": {"docs": 10, "bytes": 400, "chars": 400, "max_chars": 60},
                "B": {"docs": 2, "bytes": 400, "chars": 400, "max_chars": 200}},
        sampled=True, sample_rate=0.2, tokenizer={},
        char_hist={"A": _histogram(a_chars), "B": _histogram(b_chars)},
    )
    s = compute_stats(scan, long_threshold=10)
    a, b = s["domains"]["A"], s["domains"]["B"]
    assert a["tokens"] == 100 and a["sampled_docs"] == 2 and a["chars_per_token"] == 4.0
    # Long (>= 10 tokens): the 60-char doc (15 tokens) and the eight 40-char docs (10 each).
    assert a["long_token_fraction"] == pytest.approx(95 / 100)
    assert a["length_percentiles"]["p50"] == pytest.approx(10.0)
    assert a["length_percentiles"]["max"] == 15
    assert b["tokens"] == 100 and b["sampled_docs"] == 0 and "estimated_from" in b
    assert b["length_percentiles"]["p50"] == pytest.approx(50.0)
    assert b["long_token_fraction"] == 1.0
    assert s["total_tokens"] == 200 and a["token_share"] == pytest.approx(0.5)
    assert s["sampled"] is True
