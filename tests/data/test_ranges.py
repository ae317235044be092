"""Split reads of one big file: the ranges' documents, in order, and their summed skip counts
equal the unsplit read of the file, for every format and every target size."""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from longctx.data import readers as R
from longctx.data.ranges import (
    FileRange,
    count_lines,
    iter_range,
    split_ranges,
    stops_file,
    with_line_numbers,
)
from longctx.data.readers import Fields, iter_file

from .datahelpers import record

TARGETS = (1, 97, 4096, 100_000, 1 << 40)


def _unsplit(path: Path, fields: Fields) -> tuple[list, Counter]:
    skipped: Counter = Counter()
    docs = [(d.text, d.domain, d.index) for d in iter_file(path, fields, skipped)]
    return docs, skipped


def _split(path: Path, target: int, fields: Fields) -> tuple[list, Counter, list[FileRange]]:
    """Read range by range, merged in order as a parallel caller would (see stops_file)."""
    ranges = with_line_numbers(split_ranges(path, target))
    assert ranges[0].start == 0 and ranges[-1].end is None
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:], strict=False))
    docs, skipped = [], Counter()
    for rng in ranges:
        mine: Counter = Counter()
        docs += [(d.text, d.domain, d.index) for d in iter_range(rng, fields, mine)]
        skipped += mine
        if stops_file(mine):
            break
    return docs, skipped, ranges


def _assert_split_equals_unsplit(path: Path, fields: Fields | None = None, targets=TARGETS) -> dict:
    """Checks every target; returns the number of ranges each target gave."""
    fields = fields or Fields()
    want_docs, want_skipped = _unsplit(path, fields)
    counts = {}
    for target in targets:
        docs, skipped, ranges = _split(path, target, fields)
        assert docs == want_docs, f"target {target}: documents differ"
        assert skipped == want_skipped, f"target {target}: skips differ"
        counts[target] = len(ranges)
    return counts


def _hostile_lines(rnd: random.Random, n: int) -> list[bytes]:
    """Good records of varied sizes (one of 3 MB) among every kind of bad or blank line."""
    words = ["alpha", "beta", "gamma", "δέλτα", "日本", "x"]
    bad = [
        b"",
        b"   ",
        b"\r",
        b'{"text": "cut off',
        b"[1, 2, 3]",
        b'{"meta": {"redpajama_set_name": "A"}}',
        b'{"text": 5, "meta": {"redpajama_set_name": "A"}}',
        b'{"text": "   ", "meta": {"redpajama_set_name": "A"}}',
        b'{"text": "no domain"}',
        b'{"text": "bad \xff byte", "meta": {"redpajama_set_name": "A"}}',
        b'{"text": "lone \\ud800", "meta": {"redpajama_set_name": "A"}}',
        b"not json at all",
    ]
    lines = []
    for i in range(n):
        if i == n // 3:
            lines.append(record("big " * 750_000, "B").encode())  # a 3 MB line
        elif rnd.random() < 0.3:
            lines.append(rnd.choice(bad))
        else:
            size = rnd.choice([1, 3, 20, 200, 5000])
            text = " ".join(rnd.choice(words) for _ in range(size))
            line = record(text, rnd.choice("ABC")).encode()
            lines.append(line + b"\r" if rnd.random() < 0.1 else line)
    return lines


def _jsonl_bytes(lines: list[bytes], final_newline: bool = True) -> bytes:
    data = b"\n".join(lines)
    return data + b"\n" if final_newline else data


@pytest.mark.parametrize("ending", ["newline", "record_without_newline", "torn_line"])
def test_jsonl_ranges_read_like_the_whole_file(tmp_path, ending):
    rnd = random.Random(7)
    lines = _hostile_lines(rnd, 400)
    lines[0] = b"\xef\xbb\xbf" + record("after a byte-order mark").encode()
    if ending == "record_without_newline":
        lines.append(record("last record, no newline").encode())
    elif ending == "torn_line":
        lines.append(record("a record cut short")[:-7].encode())
    path = tmp_path / "c.jsonl"
    path.write_bytes(_jsonl_bytes(lines, final_newline=ending == "newline"))
    want_docs, want_skipped = _unsplit(path, Fields())
    assert len(want_docs) > 200 and len(want_skipped) >= 8  # the file is as hostile as meant
    assert want_docs[0][0] == "after a byte-order mark"
    counts = _assert_split_equals_unsplit(path)
    assert counts[1] == len(lines)  # target 1: every line its own range
    assert counts[100_000] > 3 and counts[1 << 40] == 1


def test_cuts_sit_right_after_newlines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"aaaa\n" * 4)
    assert [(r.start, r.end) for r in split_ranges(path, 5)] == [
        (0, 5),
        (5, 10),
        (10, 15),
        (15, None),
    ]
    # A target one past a line end cuts at the next line end; a cut never makes an empty range.
    assert [(r.start, r.end) for r in split_ranges(path, 6)] == [(0, 10), (10, None)]
    assert [(r.start, r.end) for r in split_ranges(path, 20)] == [(0, None)]
    ranges = with_line_numbers(split_ranges(path, 5))
    assert [r.lines_before for r in ranges] == [0, 1, 2, 3]
    assert [count_lines(r) for r in ranges] == [1, 1, 1, 1]


def test_overlong_lines_are_dropped_the_same_way(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "MAX_LINE_BYTES", 3000)
    rnd = random.Random(3)
    lines = [record("w " * rnd.choice([10, 900, 2000, 40_000])).encode() for _ in range(120)]
    path = tmp_path / "c.jsonl"
    path.write_bytes(_jsonl_bytes(lines))
    assert _unsplit(path, Fields())[1][R.LINE_TOO_LONG] > 10
    _assert_split_equals_unsplit(path)


def test_a_range_without_line_numbers_is_refused(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\n".join(record(f"doc {i}").encode() for i in range(50)) + b"\n")
    later = split_ranges(path, 100)[1]
    assert later.lines_before is None
    with pytest.raises(ValueError, match="count lines first"):
        list(iter_range(later, Fields(), Counter()))


def _frames(pieces: list[bytes], rnd: random.Random) -> tuple[bytes, list[int]]:
    """zstd frames of the pieces, each made a different way; also skippable and empty frames
    in between. Returns the file's bytes and the offsets of its frames."""
    makers = [
        lambda b: zstandard.ZstdCompressor(level=1).compress(b),
        lambda b: zstandard.ZstdCompressor(level=3, write_checksum=True).compress(b),
        lambda b: (lambda c: c.compress(b) + c.flush())(
            zstandard.ZstdCompressor(write_content_size=False).compressobj()
        ),
    ]
    out = io.BytesIO()
    offsets = []
    for piece in pieces:
        if rnd.random() < 0.15:
            offsets.append(out.tell())
            payload = bytes(rnd.randrange(256) for _ in range(rnd.randrange(40)))
            out.write(struct.pack("<II", 0x184D2A50 + rnd.randrange(16), len(payload)) + payload)
        if rnd.random() < 0.1:
            offsets.append(out.tell())
            out.write(zstandard.ZstdCompressor().compress(b""))
        offsets.append(out.tell())
        out.write(rnd.choice(makers)(piece))
    return out.getvalue(), offsets


def _cut_bytes(
    data: bytes, rnd: random.Random, at_lines: bool, max_piece: int = 30_000
) -> list[bytes]:
    """Pieces of ``data`` of random sizes, cut after a newline or anywhere (mid-line)."""
    pieces, pos = [], 0
    while pos < len(data):
        end = min(len(data), pos + rnd.randint(1, max_piece))
        if at_lines:
            nl = data.find(b"\n", end - 1)
            end = len(data) if nl < 0 else nl + 1
        pieces.append(data[pos:end])
        pos = end
    return pieces


@pytest.mark.parametrize("at_lines", [True, False], ids=["frames_at_lines", "frames_mid_line"])
def test_multi_frame_zstd_ranges_read_like_the_whole_file(tmp_path, at_lines):
    rnd = random.Random(11)
    data = _jsonl_bytes(_hostile_lines(rnd, 300), final_newline=False)
    blob, offsets = _frames(_cut_bytes(data, rnd, at_lines), rnd)
    path = tmp_path / "c.jsonl.zst"
    path.write_bytes(blob)
    assert len(offsets) > 20
    assert _unsplit(path, Fields())[0]  # the frames decode to the records
    counts = _assert_split_equals_unsplit(path)
    assert counts[1] > 20 and counts[1 << 40] == 1
    assert {r.start for r in split_ranges(path, 97)} <= set(offsets)


def test_single_frame_zstd_and_gzip_are_one_range(tmp_path):
    data = _jsonl_bytes(_hostile_lines(random.Random(5), 200))
    zst = tmp_path / "one.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(data))
    gz = tmp_path / "one.jsonl.gz"
    gz.write_bytes(gzip.compress(data, mtime=0))
    for path in (zst, gz):
        assert split_ranges(path, 1) == [FileRange(path, 0, None, 0, 0)]
        _assert_split_equals_unsplit(path, targets=(1,))


def _zstd_file(tmp_path: Path, rnd: random.Random, name: str) -> tuple[Path, bytes, list[int]]:
    data = _jsonl_bytes(
        [record(f"document {i} " + "w " * rnd.randrange(400)).encode() for i in range(600)]
    )
    blob, offsets = _frames(_cut_bytes(data, rnd, at_lines=False), rnd)
    return tmp_path / name, blob, offsets


def test_truncated_zstd_reads_like_the_whole_file(tmp_path):
    path, blob, _ = _zstd_file(tmp_path, random.Random(2), "cut.jsonl.zst")
    path.write_bytes(blob[: len(blob) - 2000])
    assert _unsplit(path, Fields())[1][R.TRUNCATED_FILE] == 1
    _assert_split_equals_unsplit(path)


@pytest.mark.parametrize("where", ["block_content", "block_header", "trailing_garbage"])
def test_corrupt_zstd_reads_like_the_whole_file(tmp_path, where):
    """A broken frame ends the unsplit read; the in-order merge drops the ranges after it."""
    rnd = random.Random(4)
    path, blob, offsets = _zstd_file(tmp_path, rnd, "bad.jsonl.zst")
    blob = bytearray(blob)
    frame = offsets[len(offsets) // 2]
    while blob[frame : frame + 4] != b"\x28\xb5\x2f\xfd":  # a data frame, not a skippable one
        frame = offsets[offsets.index(frame) + 1]
    if where == "block_content":
        for i in range(frame + 20, frame + 60):
            blob[i] ^= 0x5A
    elif where == "block_header":
        blob[frame : frame + 4] = b"JUNK"
    else:
        blob += b"trailing garbage"
    path.write_bytes(bytes(blob))
    want_docs, want_skipped = _unsplit(path, Fields())
    assert want_skipped[R.CORRUPT_FILE] == 1
    assert len(want_docs) < 600 or where == "trailing_garbage"
    _assert_split_equals_unsplit(path)


def test_parquet_ranges_are_row_groups(tmp_path):
    rows = [json.loads(record(f"row {i} " * (i % 13 + 1), "ABC"[i % 3])) for i in range(500)]
    rows[17]["text"] = ""
    rows[300]["meta"] = {}
    path = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=37)
    counts = _assert_split_equals_unsplit(path)
    assert counts[1] == 14 and counts[1 << 40] == 1
    ranges = split_ranges(path, 1)
    assert [r.lines_before for r in ranges] == [37 * i for i in range(14)]
    assert sum(count_lines(r) for r in ranges) == 500


def test_unreadable_or_odd_files_are_one_range(tmp_path):
    missing = tmp_path / "gone.jsonl"
    assert split_ranges(missing, 1) == [FileRange(missing, 0, None, 0, 0)]
    not_parquet = tmp_path / "fake.parquet"
    not_parquet.write_bytes(b"not parquet" * 100)
    assert len(split_ranges(not_parquet, 1)) == 1
    not_zstd = tmp_path / "fake.jsonl.zst"
    not_zstd.write_bytes(b"not zstd" * 100)
    assert len(split_ranges(not_zstd, 1)) == 1
    for path in (missing, not_parquet, not_zstd):
        _assert_split_equals_unsplit(path, targets=(1,))


def test_real_redpajama_files_split_like_the_whole(redpajama_samples, slimpajama_jsonl, tmp_path):
    by_dir = Fields(domain="@dir")
    book = redpajama_samples / "book" / "sample_book2.jsonl"  # 2 documents of 800 KB
    assert _assert_split_equals_unsplit(book, by_dir, targets=(1, 1 << 40))[1] == 2
    stack = redpajama_samples / "stackexchange" / "sample_stackexchange1.jsonl"
    counts = _assert_split_equals_unsplit(stack, by_dir, targets=(1, 65_536, 1 << 40))
    assert counts[1] == 1000 and counts[65_536] > 20
    assert len(_unsplit(slimpajama_jsonl, Fields())[0]) > 100
    _assert_split_equals_unsplit(slimpajama_jsonl, targets=(4096, 300_000))
    # The same real records as a multi-frame .zst whose frames end mid-line.
    rnd = random.Random(1)
    blob, _ = _frames(_cut_bytes(slimpajama_jsonl.read_bytes(), rnd, at_lines=False), rnd)
    zst = tmp_path / "slim.jsonl.zst"
    zst.write_bytes(blob)
    assert _unsplit(zst, Fields()) == _unsplit(slimpajama_jsonl, Fields())
    assert _assert_split_equals_unsplit(zst, targets=(100_000,))[100_000] > 5


def test_broken_big_frame_fails_after_the_same_output(tmp_path):
    """A frame broken deep inside fails mid-frame; what it decoded first is kept the same in a
    range read as in the unsplit read, wherever the range starts. Repetitive text makes
    blocks of a few hundred bytes, so how the input is cut into pieces decides how many of
    them decode before the failure."""
    rnd = random.Random(9)
    lines = [
        record("ab " * rnd.randrange(50, 3000) + str(rnd.random())).encode() for _ in range(3000)
    ]
    blob, offsets = _frames(_cut_bytes(_jsonl_bytes(lines), rnd, False, 4_000_000), rnd)
    blob = bytearray(blob)
    data_frames = [o for o in offsets if blob[o : o + 4] == b"\x28\xb5\x2f\xfd"]
    broken = len(data_frames) // 2
    start, end = data_frames[broken], data_frames[broken + 1]
    for i in range((start + 2 * end) // 3, (start + 2 * end) // 3 + 8):
        blob[i] ^= 0xFF
    path = tmp_path / "deep.jsonl.zst"
    path.write_bytes(bytes(blob))
    docs, skipped = _unsplit(path, Fields())
    assert skipped[R.CORRUPT_FILE] == 1 and 0 < len(docs) < 3000
    _assert_split_equals_unsplit(path, targets=(1, 5000, 77_777))


def test_strict_range_read_names_the_same_line(tmp_path):
    lines = [record(f"doc {i}").encode() for i in range(300)]
    lines[211] = b"{broken"
    path = tmp_path / "c.jsonl"
    path.write_bytes(_jsonl_bytes(lines))
    with pytest.raises(R.DataError, match=r"c\.jsonl:212: malformed_json"):
        list(iter_file(path, Fields(), Counter(), strict=True))
    ranges = with_line_numbers(split_ranges(path, 1000))
    assert len(ranges) > 5
    with pytest.raises(R.DataError, match=r"c\.jsonl:212: malformed_json"):
        for rng in ranges:
            list(iter_range(rng, Fields(), Counter(), strict=True))


def test_line_counts_from_workers_number_the_ranges_alike(tmp_path):
    rnd = random.Random(6)
    data = _jsonl_bytes(_hostile_lines(rnd, 200))
    blob, _ = _frames(_cut_bytes(data, rnd, at_lines=False), rnd)
    for path, raw in ((tmp_path / "c.jsonl", data), (tmp_path / "c.jsonl.zst", blob)):
        path.write_bytes(raw)
        ranges = split_ranges(path, 20_000)
        counted = with_line_numbers(ranges, [count_lines(r) for r in ranges])
        assert counted == with_line_numbers(ranges)
        assert sum(count_lines(r) for r in ranges) == data.count(b"\n")


def test_a_range_after_frames_without_bytes_finds_the_byte_before_it(tmp_path):
    """Empty and skippable frames sit before the cut: the range still learns that the byte
    before it is mid-line, also when told to start decoding at a frame that decodes to
    nothing (then it decodes from the file's start)."""
    empty = zstandard.ZstdCompressor().compress(b"")
    skip = struct.pack("<II", 0x184D2A51, 3) + b"abc"
    first = zstandard.ZstdCompressor().compress(record("one").encode() + b"\n" + b'{"text": "tw')
    second = zstandard.ZstdCompressor().compress(b'o", "meta": {"redpajama_set_name": "A"}}\n')
    path = tmp_path / "c.jsonl.zst"
    path.write_bytes(first + empty + skip + second)
    cut = len(first) + len(empty) + len(skip)
    ranges = with_line_numbers(split_ranges(path, cut))
    assert [(r.start, r.lead) for r in ranges] == [(0, 0), (cut, 0)]
    want = _unsplit(path, Fields())
    assert [d[:1] for d in want[0]] == [("one",), ("two",)]
    assert _split(path, cut, Fields())[:2] == want
    at_empty = replace(ranges[1], lead=len(first))
    skipped: Counter = Counter()
    assert list(iter_range(at_empty, Fields(), skipped)) == []  # "two" is the first range's
    assert not skipped  # its tail was not read as a line of its own


def test_a_file_gone_after_splitting_counts_once(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(_jsonl_bytes([record(f"doc {i}").encode() for i in range(100)]))
    ranges = with_line_numbers(split_ranges(path, 500))
    assert len(ranges) > 3
    path.unlink()
    docs, skipped = [], Counter()
    for rng in ranges:
        mine: Counter = Counter()
        docs += list(iter_range(rng, Fields(), mine))
        skipped += mine
        if stops_file(mine):
            break
    assert docs == [] and skipped == _unsplit(path, Fields())[1] == {R.UNREADABLE_FILE: 1}
