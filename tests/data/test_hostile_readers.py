"""Hostile corpus files at the reader level: every one is read to the end, every good record
is kept, every bad one is a counted skip (or, with ``strict``, an error naming file:line).
Inputs are generated here."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
import tracemalloc
import zlib
from collections import Counter
from pathlib import Path

import pytest
import zstandard

from longctx.data import readers as R
from longctx.data.readers import DataError, Fields, iter_file

from .datahelpers import record, write_lines

GOOD = [record(f"good document {i} " * (i + 2), "AB"[i % 2]) for i in range(12)]


def _docs(path, fields=None, strict=False):
    skipped: Counter = Counter()
    docs = list(iter_file(path, fields or Fields(), skipped, strict))
    return docs, skipped


def _zcat_lines(path: Path) -> list[bytes]:
    """What zcat prints (every byte gzip can decode), split into lines."""
    if shutil.which("zcat"):
        out = subprocess.run(["zcat", str(path)], capture_output=True).stdout
    else:  # the same thing by hand: members one after another until the bytes stop decoding
        data, out = path.read_bytes(), b""
        while data:
            d = zlib.decompressobj(31)
            try:
                out += d.decompress(data)
            except zlib.error:
                break
            data = d.unused_data
    return [ln for ln in out.split(b"\n") if ln.strip()]


# ---- the last record of a compressed file ------------------------------------------------


@pytest.mark.parametrize("tail", [b"garbage after the member", b"\x1f\x8b\x08\x00trunc"])
def test_gz_last_record_without_newline_survives_trailing_bytes(tmp_path, tail):
    body = "\n".join(GOOD).encode()  # no final newline
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(gzip.compress(body, mtime=0) + tail)
    docs, skipped = _docs(path)
    assert len(_zcat_lines(path)) == len(GOOD)
    assert [d.index for d in docs] == list(range(1, len(GOOD) + 1))
    assert docs[-1].text == json.loads(GOOD[-1])["text"]
    assert sum(skipped.values()) == 1  # the broken tail is reported once, never silently
    assert set(skipped) <= {R.CORRUPT_FILE, R.TRUNCATED_FILE}
    with pytest.raises(DataError, match=rf"t.jsonl.gz:{len(GOOD) + 1}: "):
        _docs(path, strict=True)


def test_gz_zero_padding_is_not_an_error(tmp_path):
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(GOOD).encode(), mtime=0) + b"\0" * 5000)
    docs, skipped = _docs(path)
    assert len(docs) == len(GOOD) and not skipped


def test_zst_last_record_without_newline_survives_trailing_bytes(tmp_path):
    path = tmp_path / "t.jsonl.zst"
    blob = zstandard.ZstdCompressor().compress("\n".join(GOOD).encode())
    path.write_bytes(blob + b"not a zstd frame at all")
    docs, skipped = _docs(path)
    assert len(docs) == len(GOOD) and sum(skipped.values()) == 1


def test_cut_inside_the_last_record_counts_it_once(tmp_path):
    """A stream cut mid-record: that record is the only casualty, under truncated_file."""
    body = ("\n".join(GOOD)).encode()
    blob = gzip.compress(body, mtime=0)
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(blob[: len(blob) - 12])  # drops the trailer and a few data bytes
    docs, skipped = _docs(path)
    decodable = zlib.decompressobj(31).decompress(blob[: len(blob) - 12])
    complete = decodable.count(b"\n")
    assert len(docs) == complete and skipped == {R.TRUNCATED_FILE: 1}


# ---- huge lines, files without newlines, decompression bombs ------------------------------


def test_line_over_the_limit_is_skipped_while_neighbours_survive(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "MAX_LINE_BYTES", 3000)
    monkeypatch.setattr(R, "_CHUNK", 1024)  # the long line spans many chunks
    huge = record("x " * 5000)  # ~10 KB
    lines = [GOOD[0], huge, GOOD[1], huge, GOOD[2]]
    for compress, suffix in ((None, ".jsonl"), ("gz", ".jsonl.gz"), ("zst", ".jsonl.zst")):
        docs, skipped = _docs(write_lines(tmp_path / f"h{suffix}", lines, compress))
        assert [d.index for d in docs] == [1, 3, 5], compress
        assert skipped == {R.LINE_TOO_LONG: 2}, compress
    with pytest.raises(DataError, match=r"h.jsonl:2: line_too_long"):
        _docs(tmp_path / "h.jsonl", strict=True)


def test_file_without_newlines_is_one_skip_and_bounded_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "MAX_LINE_BYTES", 1 << 20)
    path = tmp_path / "blob.jsonl"
    with open(path, "wb") as f:
        for _ in range(24):
            f.write(b"a" * (1 << 20))  # 24 MiB, no newline
    tracemalloc.start()
    try:
        docs, skipped = _docs(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert docs == [] and skipped == {R.LINE_TOO_LONG: 1}
    assert peak < 8 << 20


def test_long_line_across_many_chunks_is_read_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "_CHUNK", 4096)
    text = "".join(random.Random(1).choices("abcdefgh ", k=300_000))
    path = write_lines(tmp_path / "long.jsonl", [GOOD[0], record(text), GOOD[1]])
    docs, skipped = _docs(path)
    assert not skipped and [d.text for d in docs][1] == text


def test_zstd_bomb_output_is_fed_in_bounded_pieces(tmp_path, monkeypatch):
    """64 MiB of zeros compress to a few KiB; fed in 64-byte pieces, no decoded chunk can be
    more than 64 / 4 x 128 KiB (RLE blocks), so memory is bounded by the piece size."""
    monkeypatch.setattr(R, "_ZSTD_INPUT", 64)
    comp = zstandard.ZstdCompressor(level=19).compressobj()
    zeros = b"\0" * (4 << 20)
    blob = b"".join(comp.compress(zeros) for _ in range(16)) + comp.flush()
    assert len(blob) < 64 << 10
    path = tmp_path / "bomb.jsonl.zst"
    path.write_bytes(blob)
    sizes = [len(c) for c in R._decompressed_chunks(path)]
    assert sum(sizes) == 64 << 20 and max(sizes) <= 2 << 20
    monkeypatch.setattr(R, "MAX_LINE_BYTES", 1 << 20)
    docs, skipped = _docs(path)
    assert docs == [] and skipped == {R.LINE_TOO_LONG: 1}


# ---- unusable domains and garbage files ---------------------------------------------------


def test_domain_from_an_undecodable_folder_name_is_invalid_unicode(tmp_path):
    folder = tmp_path / os.fsdecode(b"dom\xff")  # a surrogate-escaped path component
    try:
        folder.mkdir()
    except (OSError, UnicodeError):
        pytest.skip("filesystem refuses undecodable names")
    path = write_lines(folder / "a.jsonl", GOOD[:3])
    docs, skipped = _docs(path, Fields(domain="@dir"))
    assert docs == [] and skipped == {R.INVALID_UNICODE: 3}
    docs, skipped = _docs(path, Fields(domain="@file"))
    assert len(docs) == 3 and not skipped


@pytest.mark.parametrize("field", ["text", "domain", "both"])
def test_lone_surrogates_in_any_field_read(tmp_path, field):
    text = "ok text \\ud800 here" if field in ("text", "both") else "ok text"
    domain = "Dom\\udc00" if field in ("domain", "both") else "Dom"
    bad = ('{"text": "' + text + '", "meta": {"redpajama_set_name": "' + domain + '"}}').encode()
    paired = b'{"text": "emoji \\ud83d\\ude00 is fine", "meta": {"redpajama_set_name": "A"}}'
    path = write_lines(tmp_path / "s.jsonl", [GOOD[0].encode(), bad, paired])
    docs, skipped = _docs(path)
    assert [d.index for d in docs] == [1, 3] and docs[1].text == "emoji \U0001F600 is fine"
    assert skipped == {R.INVALID_UNICODE: 1}
    for d in docs:
        d.text.encode("utf-8")
        d.domain.encode("utf-8")


@pytest.mark.parametrize(
    "name,content",
    [
        ("random.jsonl", random.Random(0).randbytes(200_000)),
        ("random.jsonl.gz", random.Random(1).randbytes(5000)),
        ("random.jsonl.zst", random.Random(2).randbytes(5000)),
        ("nul.jsonl", b"\0" * 10_000 + b"\n" + b"\0\n" * 100),
        ("empty.jsonl", b""),
        ("empty.jsonl.gz", b""),
        ("empty.jsonl.zst", b""),
        ("scalars.jsonl", b"1\n\"s\"\nnull\ntrue\n[]\n1e999\n" + b"9" * 5000 + b"\n"),
    ],
)
def test_garbage_files_never_raise_and_count_what_they_skip(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    docs, skipped = _docs(path)
    assert docs == []
    assert set(skipped) <= set(R.SKIP_REASONS)
    lines = [ln for ln in content.split(b"\n") if ln.strip()]
    if name.endswith(".jsonl"):
        assert sum(skipped.values()) == len(lines)  # one skip per non-blank line
    assert bool(skipped) == bool(lines)


def test_empty_parquet_file_is_one_unreadable_file(tmp_path):
    (tmp_path / "e.parquet").write_bytes(b"")
    assert _docs(tmp_path / "e.parquet") == ([], Counter({R.UNREADABLE_FILE: 1}))
