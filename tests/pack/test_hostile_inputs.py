"""``data build`` on hostile inputs generated here: each ends in a counted skip or one line
``error: ...`` (exit 2), never a traceback, never a ``done`` with a good record missing."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from longctx.mix.select import (
    MAX_PASSES,
    Eligible,
    SelectError,
    check_budgets,
    check_output_size,
    select_pieces,
)
from longctx.pack.export import run_export
from longctx.pack.shards import PackedDataset, ShardError, ShardWriter

from ..cli_helpers import assert_one_line_error as _one_line_error
from ..cli_helpers import run_main as _run


@pytest.fixture(scope="module")
def word_tok(tmp_path_factory) -> Path:
    """One token per whitespace-separated word (no BOS): token counts known by construction."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "w": 1, "x": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tmp_path_factory.mktemp("wordtok")
    tok.save(str(folder / "tokenizer.json"))
    return folder


def _rec(words: int, domain: str) -> bytes:
    return json.dumps({"text": "w " * words, "meta": {"redpajama_set_name": domain}}).encode()


def _build(corpus: Path, out: Path, tok: Path, capsys, *extra: str) -> tuple[int, str, str]:
    return _run(["data", "build", str(corpus), "--out", str(out), "--tokenizer", str(tok),
                 "--strategy", "original", "--long-threshold", "4", *extra], capsys)


def _packed_docs(out: Path) -> set[tuple[str, int]]:
    """(file, line) of every document piece in the shards, read from the provenance columns."""
    m = json.loads((out / "manifest.json").read_text())
    files = [f["path"] for f in m["files"]]
    seen = set()
    for entry in m["shards"]:
        t = pa.ipc.open_stream(pa.memory_map(str(out / entry["path"]))).read_all()
        for pf, pl in zip(t.column("piece_file").to_pylist(), t.column("piece_line").to_pylist(),
                          strict=True):
            seen.update((files[f], ln) for f, ln in zip(pf, pl, strict=True))
    return seen


def test_build_keeps_every_good_record_of_hostile_files(tmp_path, word_tok, capsys):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.jsonl").write_bytes(b"\n".join([
        _rec(12, "A"),
        b"[" * 100_000 + b"]" * 100_000,  # too_deep
        _rec(13, "Dom\ud800"),  # json.dumps escapes it as \\ud800: invalid_unicode
        b'{"text": "w \\udfff w", "meta": {"redpajama_set_name": "A"}}',  # ... in the text
        _rec(14, r"$\undefinedcmd$"),  # a valid name that matplotlib would read as math
        b"\x00\xff binary \xfe garbage",  # invalid_utf8
        _rec(15, "A"),
    ]) + b"\n")
    # the last record lacks its newline and junk follows the gzip member (zcat keeps it)
    gz = b"\n".join([_rec(16, "B"), _rec(17, "B")])
    (corpus / "b.jsonl.gz").write_bytes(gzip.compress(gz, mtime=0) + b"junk")
    code, out, err = _build(corpus, tmp_path / "o", word_tok, capsys, "--tokens", "2K",
                            "--seq-len", "64")
    assert code == 0, err
    m = json.loads((tmp_path / "o" / "manifest.json").read_text(encoding="utf-8"))
    assert m["status"] == "done"
    assert m["skipped"] == {"corrupt_file": 1, "invalid_unicode": 2, "invalid_utf8": 1,
                            "too_deep": 1}
    assert m["domain_vocab"] == ["$\\undefinedcmd$", "A", "B"]
    assert _packed_docs(tmp_path / "o") == {("a.jsonl", 1), ("a.jsonl", 5), ("a.jsonl", 7),
                                            ("b.jsonl.gz", 1), ("b.jsonl.gz", 2)}
    data = PackedDataset(tmp_path / "o")
    assert len(data) == m["num_sequences"]
    e = run_export(tmp_path / "o", tmp_path / "x", "jsonl")  # export crashed on such names
    assert e["num_sequences"] == m["num_sequences"]
    code, _, err = _build(corpus, tmp_path / "s", word_tok, capsys, "--tokens", "2K",
                          "--seq-len", "64", "--strict")
    line = _one_line_error(code, err)  # files are read in a seeded order: either comes first
    assert "a.jsonl:2: too_deep" in line or "b.jsonl.gz:3: corrupt_file" in line, line


def test_absurd_token_budget_fails_fast_in_one_line(tmp_path, word_tok, capsys):
    """--tokens 100T on a ~200 KB corpus: refused in seconds, not grown into a MemoryError."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.jsonl").write_bytes(b"\n".join(_rec(100, "AB"[i % 2]) for i in range(900)))
    assert 150_000 < (corpus / "a.jsonl").stat().st_size < 250_000
    t0 = time.monotonic()
    code, _, err = _build(corpus, tmp_path / "o", word_tok, capsys, "--tokens", "100T",
                          "--seq-len", "1024")
    _one_line_error(code, err, "tokens")
    assert time.monotonic() - t0 < 60
    code, _, err = _build(corpus, tmp_path / "o2", word_tok, capsys, "--tokens", "5000T",
                          "--seq-len", "1024")
    _one_line_error(code, err, "tokens")


def test_seq_len_beyond_int32_offsets_is_one_line(tmp_path, word_tok, capsys):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.jsonl").write_bytes(_rec(10, "A") + b"\n")
    code, _, err = _build(corpus, tmp_path / "o", word_tok, capsys, "--tokens", "1K",
                          "--seq-len", "3000000000")
    _one_line_error(code, err, "seq_len")


def test_build_with_more_domains_than_int16_codes(tmp_path, word_tok, capsys):
    n = 33_000
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.jsonl").write_bytes(b"\n".join(_rec(1 + i % 3, f"d{i:05d}") for i in range(n)))
    total = sum(1 + i % 3 for i in range(n))
    code, _, err = _build(corpus, tmp_path / "o", word_tok, capsys, "--tokens", str(total),
                          "--seq-len", "256", "--long-threshold", "2")
    assert code == 0, err
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert len(m["domain_vocab"]) == n and m["skipped"] == {}
    data = PackedDataset(tmp_path / "o")
    seen = set()
    for i in range(len(data)):
        seen.update(int(d) for d in data.row(i).doc_domains)
    assert max(seen) > 32_767 and len(seen) == n


def test_shard_domain_codes_are_sized_to_the_vocabulary(tmp_path):
    ids = np.zeros((2, 4), dtype=np.uint16)
    offsets, domains, cont = [[0, 2, 4], [0, 4]], [[39_999, 7], [32_768]], [False, True]
    w = ShardWriter(tmp_path / "big.arrow", 4, np.uint16, num_domains=40_000)
    w.write(ids, offsets, domains, cont)
    w.close()
    t = pa.ipc.open_stream(pa.memory_map(str(tmp_path / "big.arrow"))).read_all()
    assert t.schema.field("doc_domains").type == pa.list_(pa.int32())
    assert t.column("doc_domains").to_pylist() == domains
    small = ShardWriter(tmp_path / "small.arrow", 4, np.uint16, num_domains=32_768)
    assert small.schema.field("doc_domains").type == pa.list_(pa.int16())
    with pytest.raises(ShardError, match="does not fit int16"):
        small.write(ids, offsets, domains, cont)  # a wrapped code would be silent corruption
    small.close()


def _eligible(lengths: list[int]) -> Eligible:
    n = len(lengths)
    return Eligible(file=np.zeros(n, np.int32), row=np.arange(n), line=np.arange(1, n + 1),
                    start=np.zeros(n, np.int64), domain=np.zeros(n, np.int16),
                    length=np.asarray(lengths, np.int64), priority=np.arange(n, dtype=np.uint64))


def test_selection_refuses_more_than_max_passes():
    el = _eligible([10, 20, 30])  # 60 eligible tokens
    groups = {"A": np.arange(3)}
    sel = select_pieces(el, groups, {"A": 60 * MAX_PASSES})  # exactly the limit: fine
    assert int(sel.length.sum()) == 60 * MAX_PASSES and max(sel.epoch) == MAX_PASSES - 1
    with pytest.raises(SelectError, match=r"A: a budget of 60,001 tokens would repeat .* 1,001"):
        select_pieces(el, groups, {"A": 60 * MAX_PASSES + 1})
    with pytest.raises(SelectError, match="all domains"):
        check_budgets({"*": 10**14}, {"*": 50_000})
    check_budgets({"A": 0, "B": 5}, {"A": 0, "B": 5})


def test_output_size_bounds():
    check_output_size(1000, 8192, 2, free_disk=10**9, memory=10**9)
    with pytest.raises(SelectError, match="int32"):
        check_output_size(1, 3_000_000_000, 2)
    with pytest.raises(SelectError, match="memory"):
        check_output_size(1, 1 << 30, 4, memory=1 << 31)
    with pytest.raises(SelectError, match=r"free on the output disk"):
        check_output_size(12_207_031_250, 8192, 2, free_disk=10**12)  # 100T tokens
