from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longctx.data import readers as R
from longctx.data.lengths import count_records, doc_hash, file_keys, scan_lengths
from longctx.data.readers import Fields, iter_documents
from longctx.data.tokenizer import load_tokenizer

from .datahelpers import record, write_lines


def _word_corpus(root: Path, n_files: int = 4, per_file: int = 500) -> Path:
    """Docs of known word counts over three domains; a few bad lines; mixed compressions."""
    rng = np.random.default_rng(0)
    for f in range(n_files):
        lines = []
        for i in range(per_file):
            k = int(rng.integers(1, 300)) if i % 50 else int(rng.integers(4000, 9000))
            lines.append(record(" ".join(["w"] * k), "ABC"[(i + f) % 3]))
            if i % 97 == 0:
                lines.append("{broken")
        write_lines(root / f"part{f}.jsonl{['', '.gz', '.zst', ''][f % 4]}", lines,
                    [None, "gz", "zst", None][f % 4])
    return root


@pytest.fixture(scope="module")
def word_corpus(tmp_path_factory) -> Path:
    return _word_corpus(tmp_path_factory.mktemp("wc"))


def _same(a, b) -> None:
    assert a.domains == b.domains and a.files == b.files and a.skipped == b.skipped
    assert a.totals == b.totals and a.sample_rate == b.sample_rate
    for col in ("file_id", "domain", "index", "tokens", "bytes", "chars"):
        assert np.array_equal(getattr(a, col), getattr(b, col)), col
    assert a.char_hist.keys() == b.char_hist.keys()
    for d in a.char_hist:
        assert all(np.array_equal(x, y) for x, y in zip(a.char_hist[d], b.char_hist[d], strict=True))


def test_counts_match_direct_tokenizer_calls(demo_small, smollm2_tokenizer):
    scan = scan_lengths([demo_small], smollm2_tokenizer, progress=False)
    docs = list(iter_documents([demo_small]))
    assert scan.num_docs == len(docs) and not scan.sampled
    direct = [len(ids) for ids in smollm2_tokenizer.encode_documents([d.text for d in docs])]
    assert scan.tokens.tolist() == direct
    assert scan.chars.tolist() == [len(d.text) for d in docs]
    assert scan.bytes.tolist() == [len(d.text.encode()) for d in docs]
    assert [scan.domains[i] for i in scan.domain] == [d.domain for d in docs]
    assert scan.index.tolist() == [d.index for d in docs]
    assert scan.tokenizer["sha256"] == smollm2_tokenizer.fingerprint
    # Totals over all documents read equal the per-doc columns when nothing is sampled.
    for i, name in enumerate(scan.domains):
        m = scan.domain == i
        assert scan.totals[name] == {
            "docs": int(m.sum()), "bytes": int(scan.bytes[m].sum()),
            "chars": int(scan.chars[m].sum()), "max_chars": int(scan.chars[m].max()),
        }
    assert scan.char_hist == {}  # only sampled scans histogram every document


def test_worker_count_does_not_change_results(demo_small, smollm2_tokenizer):
    one = scan_lengths([demo_small], smollm2_tokenizer, workers=1, progress=False)
    two = scan_lengths([demo_small], None, workers=2, progress=False)  # spec, loaded in parent
    _same(one, two)


def test_word_counts_skips_and_file_order(word_corpus, word_tokenizer_dir):
    tok = load_tokenizer(word_tokenizer_dir)
    assert tok.bos_id is None  # a bare tokenizer.json: counts are exactly the word counts
    scan = scan_lengths([word_corpus], tok, workers=2, progress=False)
    expected = [len(d.text.split()) for d in iter_documents([word_corpus])]
    assert scan.tokens.tolist() == expected
    assert scan.skipped == {R.MALFORMED_JSON: 4 * 6}
    assert scan.domains == ["A", "B", "C"]  # first appearance
    assert np.all(np.diff(scan.file_id) >= 0) and scan.files == sorted(scan.files)


def test_sampling_is_seeded_poisson_and_worker_independent(word_corpus, word_tokenizer_dir):
    tok = load_tokenizer(word_tokenizer_dir)
    full = scan_lengths([word_corpus], tok, progress=False)
    a = scan_lengths([word_corpus], tok, sample_docs=500, seed=7, progress=False)
    b = scan_lengths([word_corpus], tok, sample_docs=500, seed=7, workers=2, progress=False)
    _same(a, b)
    assert a.sampled and 0 < a.sample_rate < 1
    n_lines = sum(count_records(f) for f in a.files)
    assert a.sample_rate == pytest.approx(500 / n_lines)
    sd = (500 * (1 - a.sample_rate)) ** 0.5
    assert abs(a.num_docs - 500) < 4 * sd
    # Exactly the documents whose stable hash falls under the rate, in file order.
    keys = file_keys([Path(f) for f in full.files])
    chosen = [
        (int(f), int(i)) for f, i in zip(full.file_id, full.index, strict=True)
        if doc_hash(7, keys[f], int(i)) < a.sample_rate
    ]
    assert list(zip(a.file_id.tolist(), a.index.tolist(), strict=True)) == chosen
    # Totals stay exact while tokens are only counted for the sample; the char-length
    # histogram covers every document.
    assert a.totals == full.totals
    for i, name in enumerate(full.domains):
        counts, sums = a.char_hist[name]
        m = full.domain == i
        assert counts.sum() == m.sum() and sums.sum() == full.chars[m].sum()
    c = scan_lengths([word_corpus], tok, sample_docs=500, seed=8, progress=False)
    assert c.index.tolist() != a.index.tolist()


def test_sample_ids_do_not_depend_on_how_paths_are_given(word_corpus, word_tokenizer_dir):
    tok = load_tokenizer(word_tokenizer_dir)
    a = scan_lengths([word_corpus], tok, sample_docs=300, progress=False)
    cwd = os.getcwd()
    os.chdir(word_corpus.parent)
    try:
        b = scan_lengths([os.path.join(word_corpus.name, "*.jsonl*")], tok, sample_docs=300,
                         progress=False)
    finally:
        os.chdir(cwd)
    assert a.index.tolist() == b.index.tolist() and a.tokens.tolist() == b.tokens.tolist()


def test_count_records(tmp_path):
    lines = [record("a"), "{bad", record("b")]
    assert count_records(write_lines(tmp_path / "a.jsonl", lines)) == 3
    assert count_records(write_lines(tmp_path / "a.jsonl.gz", lines, "gz")) == 3
    assert count_records(write_lines(tmp_path / "a.jsonl.zst", lines, "zst")) == 3
    (tmp_path / "nonl.jsonl").write_text(record("a") + "\n" + record("b"))
    assert count_records(tmp_path / "nonl.jsonl") == 2
    pq.write_table(pa.Table.from_pylist([json.loads(record("x"))] * 5), tmp_path / "p.parquet")
    assert count_records(tmp_path / "p.parquet") == 5


def test_strict_error_from_a_worker_names_file_and_line(word_corpus, word_tokenizer_dir):
    with pytest.raises(R.DataError, match=r"part0.jsonl:2: malformed_json"):
        scan_lengths([word_corpus], word_tokenizer_dir, workers=2, strict=True, progress=False)


def test_fields_are_passed_to_workers(tmp_path, word_tokenizer_dir):
    lines = [json.dumps({"body": "w w w", "src": "x"}), json.dumps({"body": "w", "src": "y"})]
    write_lines(tmp_path / "a.jsonl", lines)
    write_lines(tmp_path / "b.jsonl", lines[::-1])
    scan = scan_lengths([tmp_path], word_tokenizer_dir, Fields(text="body", domain="src"),
                        workers=2, progress=False)
    assert scan.tokens.tolist() == [3, 1, 1, 3]
    assert scan.domains == ["x", "y"] and scan.domain.tolist() == [0, 1, 1, 0]
    assert Counter(scan.skipped) == Counter()
