"""Pieces of one big corpus file that workers can read in parallel, with the documents,
line numbers and skip counts of the unsplit read.

:func:`split_ranges` cuts a file where a reader can start without the bytes before:
uncompressed jsonl right after a newline, .zst at a frame start (found from frame and block
headers, nothing decompressed), parquet at a row group. gzip cannot be entered mid-stream,
so a .gz file is one range. :func:`with_line_numbers` gives each range the count of lines
before it; :func:`iter_range` then yields exactly that range's documents with their global
1-based ``index``.

A line belongs to the range holding its first byte. Uncompressed cuts sit on line starts, so
that is the whole story there; zstd frames may end mid-line, so a range first decodes the
frame before its start (to learn whether its first byte opens a line), drops the tail of a
line begun earlier, and decodes past its end to finish its own last line.

A broken compressed stream or parquet page ends the unsplit read of a file; ranges after it
would still read. A caller that merges ranges in order therefore keeps nothing after the
first range for which :func:`stops_file` is true; then the documents and the summed skip
counters equal the unsplit read's.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from longctx.data.readers import (
    _CHUNK,
    _ZSTD_INPUT,
    CORRUPT_FILE,
    PARQUET_SUFFIXES,
    TRUNCATED_FILE,
    UNREADABLE_FILE,
    Document,
    Fields,
    _StreamError,
    _unzstd_chunks,
    iter_file,
    iter_jsonl_chunks,
    iter_parquet,
)

_NEWLINE_SEARCH = 1 << 16  # most lines end well within this
_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MAGIC = 0x184D2A50  # 0x184D2A50 ... 0x184D2A5F
_DICT_ID_BYTES = (0, 1, 2, 4)
_CONTENT_SIZE_BYTES = (0, 2, 4, 8)  # flag 0 means 1 byte when the frame is single-segment
_RLE_BLOCK = 1
_COMPRESSED_BLOCK = 2
_RESERVED_BLOCK = 3


@dataclass(frozen=True, slots=True)
class FileRange:
    """One piece of a corpus file.

    ``start``/``end`` are byte offsets (uncompressed jsonl: line starts; .zst: frame starts)
    or row-group numbers (parquet); ``end`` None reads to the end of the file. ``lead`` is
    where a .zst range starts decoding: the last frame before ``start`` whose block headers
    say it regenerates bytes (uncompressed: ``start``; parquet: unused). ``lines_before`` is
    the number of lines (rows) that end before ``start``; None until counted.
    """

    path: Path
    start: int
    end: int | None
    lead: int
    lines_before: int | None

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.end is None


def split_ranges(path: str | os.PathLike, target_bytes: int) -> list[FileRange]:
    """Ranges of about ``target_bytes`` (at least that, but the last) covering ``path`` in
    order. A file smaller than the target, a .gz file, a single-frame .zst and a file that
    cannot be read are one range (the reader reports what is wrong with it)."""
    if target_bytes < 1:
        raise ValueError(f"target_bytes must be positive, got {target_bytes}")
    path = Path(path)
    whole = [FileRange(path, 0, None, 0, 0)]
    name = path.name
    try:
        if name.endswith(PARQUET_SUFFIXES):
            return _parquet_ranges(path, target_bytes)
        size = path.stat().st_size
        if size <= target_bytes or name.endswith(".gz"):
            return whole
        with open(path, "rb") as f:
            if name.endswith(".zst"):
                return _frame_ranges(path, _zstd_frames(f, size), target_bytes)
            return _line_ranges(path, f, size, target_bytes)
    except (OSError, ValueError, NotImplementedError):  # pyarrow's errors derive from these
        return whole  # unreadable, or not parquet: the reader counts it, once


def _line_ranges(path: Path, f, size: int, target: int) -> list[FileRange]:
    cuts = [0]
    while (after := _after_newline(f, cuts[-1] + target - 1)) is not None and after < size:
        cuts.append(after)
    return _ranges_at(path, cuts, cuts)


def _after_newline(f, pos: int) -> int | None:
    """The offset just after the first newline at or after ``pos``; None when there is none."""
    f.seek(pos)
    while block := f.read(_NEWLINE_SEARCH):
        i = block.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(block)
    return None


def _ranges_at(path: Path, cuts: list[int], leads: list[int]) -> list[FileRange]:
    ends: list[int | None] = [*cuts[1:], None]
    return [
        FileRange(path, start, end, lead, 0 if start == 0 else None)
        for start, end, lead in zip(cuts, ends, leads, strict=True)
    ]


def _zstd_frames(f, size: int) -> list[tuple[int, bool]]:
    """(offset, holds data) of each whole frame of a .zst file, read from headers only.

    The walk stops at the first bytes that are not a whole, well-formed frame (a truncated
    last frame, trailing garbage): they stay in the last range, whose reader reports them.
    """
    frames = []
    pos = 0
    while pos < size and (end := _frame_end(f, pos, size)) is not None:
        frames.append((pos, end[1]))
        pos = end[0]
    return frames


def _frame_end(f, pos: int, size: int) -> tuple[int, bool] | None:
    """(end offset, holds data) of the frame at ``pos`` (RFC 8878), or None if there is none."""
    f.seek(pos)
    head = f.read(5)
    if len(head) < 5:
        return None
    magic = int.from_bytes(head[:4], "little")
    if magic & 0xFFFFFFF0 == _SKIPPABLE_MAGIC:
        if len(head := head + f.read(3)) < 8:
            return None
        end = pos + 8 + int.from_bytes(head[4:8], "little")
        return (end, False) if end <= size else None
    if magic != _ZSTD_MAGIC:
        return None
    descriptor = head[4]
    single_segment = descriptor >> 5 & 1
    if descriptor >> 3 & 1:  # reserved bit: not a frame this reader knows
        return None
    content_size_flag = descriptor >> 6
    pos += 5 + (1 - single_segment) + _DICT_ID_BYTES[descriptor & 3]
    pos += _CONTENT_SIZE_BYTES[content_size_flag] or single_segment
    holds_data = False  # some block regenerates bytes: raw or RLE of size > 0, or compressed
    while True:
        f.seek(pos)
        block = f.read(3)
        if len(block) < 3:
            return None
        header = int.from_bytes(block, "little")
        kind = header >> 1 & 3
        if kind == _RESERVED_BLOCK:
            return None
        block_size = header >> 3
        holds_data = holds_data or kind == _COMPRESSED_BLOCK or block_size > 0
        pos += 3 + (1 if kind == _RLE_BLOCK else block_size)
        if pos > size:
            return None
        if header & 1:  # last block of the frame
            break
    pos += 4 * (descriptor >> 2 & 1)  # content checksum
    return (pos, holds_data) if pos <= size else None


def _frame_ranges(path: Path, frames: list[tuple[int, bool]], target: int) -> list[FileRange]:
    cuts, leads = [0], [0]
    last_data = 0  # the last frame before the frame at hand that regenerates bytes
    for offset, holds_data in frames:
        if offset >= cuts[-1] + target:
            cuts.append(offset)
            leads.append(last_data)
        if holds_data:
            last_data = offset
    return _ranges_at(path, cuts, leads)


def _parquet_ranges(path: Path, target: int) -> list[FileRange]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    ranges = []
    start, rows, size, rows_before = 0, 0, 0, 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        rows += group.num_rows
        size += sum(group.column(c).total_compressed_size for c in range(group.num_columns))
        if size >= target and i + 1 < meta.num_row_groups:
            ranges.append(FileRange(path, start, i + 1, 0, rows_before))
            start, rows_before, size = i + 1, rows, 0
    ranges.append(FileRange(path, start, None, 0, rows_before))
    return ranges


def count_lines(rng: FileRange) -> int:
    """Lines (rows) that end inside a range: its newline bytes, or its parquet rows.

    For .zst this costs a decompression of the range. Undecodable bytes end the count (the
    read of the range stops there too). Raises OSError when the file cannot be read.
    """
    if rng.path.name.endswith(PARQUET_SUFFIXES):
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(rng.path).metadata
        end = meta.num_row_groups if rng.end is None else rng.end
        return sum(meta.row_group(i).num_rows for i in range(rng.start, end))
    with open(rng.path, "rb") as f:
        window = _Window(f, rng.start, rng.end)
        chunks = _unzstd_chunks(window) if rng.path.name.endswith(".zst") else window.chunks()
        count = 0
        try:
            for chunk in chunks:
                count += chunk.count(b"\n")
        except _StreamError:
            pass
        return count


def with_line_numbers(ranges: list[FileRange], counts: list[int] | None = None) -> list[FileRange]:
    """The ranges of one file (in order) with ``lines_before`` filled by a prefix sum of line
    counts: ``counts[i]`` is :func:`count_lines` of ``ranges[i]`` (a caller with workers
    counts the ranges in parallel), or, without ``counts``, counted here one after another."""
    out: list[FileRange] = []
    for i, rng in enumerate(ranges):
        if rng.lines_before is None:
            ended = counts[i - 1] if counts is not None else count_lines(ranges[i - 1])
            rng = replace(rng, lines_before=out[-1].lines_before + ended)
        out.append(rng)
    return out


def iter_range(
    rng: FileRange, fields: Fields, skipped: Counter, strict: bool = False
) -> Iterator[Document]:
    """The documents of one range, with the ``index`` the unsplit read gives them; bad
    records are counted in ``skipped`` as the unsplit read counts them."""
    if rng.lines_before is None:
        raise ValueError(f"{rng.path} range at {rng.start}: count lines first (with_line_numbers)")
    if rng.whole:
        yield from iter_file(rng.path, fields, skipped, strict)
        return
    first = rng.lines_before + 1
    if rng.path.name.endswith(PARQUET_SUFFIXES):
        yield from _iter_row_groups(rng, fields, skipped, strict, first)
        return
    chunks = _zstd_range_chunks(rng) if rng.path.name.endswith(".zst") else _plain_chunks(rng)
    yield from iter_jsonl_chunks(chunks, str(rng.path), fields, skipped, strict, first)


def stops_file(range_skipped: Counter) -> bool:
    """True when a range's read ended on a broken stream or page, or on a file it could not
    read: the unsplit read stops there, so an in-order merge drops every later range."""
    return any(range_skipped[r] for r in (TRUNCATED_FILE, CORRUPT_FILE, UNREADABLE_FILE))


def _iter_row_groups(
    rng: FileRange, fields: Fields, skipped: Counter, strict: bool, first: int
) -> Iterator[Document]:
    import pyarrow.parquet as pq

    end = rng.end
    if end is None:
        end = pq.ParquetFile(rng.path).metadata.num_row_groups
    groups = list(range(rng.start, end))
    yield from iter_parquet(rng.path, fields, skipped, strict, row_groups=groups, first_index=first)


class _Window:
    """Reads of the bytes ``[start, end)`` of an open file (``end`` None: to its end); each
    window keeps its own position, so several can take turns on one file.

    Reads stop at the boundaries the unsplit read's pieces stop at (the zstd input piece,
    then the chunk), so a decoder meets a frame in the same pieces as there and a broken
    frame fails after the same output.
    """

    def __init__(self, f, start: int, end: int | None) -> None:
        self._f, self._pos, self._end = f, start, end

    def read(self, n: int) -> bytes:
        step = _ZSTD_INPUT if self._pos % _ZSTD_INPUT else _CHUNK
        n = min(n, step - self._pos % step)
        if self._end is not None:
            n = min(n, self._end - self._pos)
        if n <= 0:
            return b""
        self._f.seek(self._pos)
        data = self._f.read(n)
        self._pos += len(data)
        return data

    def chunks(self) -> Iterator[bytes]:
        while block := self.read(_CHUNK):
            yield block


def _plain_chunks(rng: FileRange) -> Iterator[bytes]:
    with open(rng.path, "rb") as f:
        yield from _Window(f, rng.start, rng.end).chunks()


def _zstd_range_chunks(rng: FileRange) -> Iterator[bytes]:
    """Decoded bytes of a .zst range, cut to the lines it owns.

    When the byte before ``start`` is not a newline, the bytes up to the first newline end a
    line an earlier range owns: they are dropped, the newline itself kept, so the line
    numbering sees that line (as an empty one, which is skipped as layout). A last line left
    open at ``end`` is finished from the frames after it.
    """
    with open(rng.path, "rb") as f:
        dropping = not _opens_line(f, rng)
        open_line = False
        for chunk in _unzstd_chunks(_Window(f, rng.start, rng.end)):
            if dropping:
                cut = chunk.find(b"\n")
                if cut < 0:
                    continue
                chunk, dropping = chunk[cut:], False
            if chunk:
                yield chunk
                open_line = not chunk.endswith(b"\n")
        if not open_line or rng.end is None:
            return
        for chunk in _unzstd_chunks(_Window(f, rng.end, None)):
            cut = chunk.find(b"\n")
            if cut >= 0:
                yield chunk[: cut + 1]
                return
            yield chunk


def _opens_line(f, rng: FileRange) -> bool:
    """True when the decoded byte before ``rng.start`` is a newline (or there is none).

    Decodes from ``rng.lead``; only when that decodes to nothing (a compressed block may
    regenerate nothing, which headers cannot tell), everything before ``start``."""
    last = _last_decoded_byte(f, rng.lead, rng.start)
    if last is None and rng.lead > 0:
        last = _last_decoded_byte(f, 0, rng.start)
    return last is None or last == b"\n"


def _last_decoded_byte(f, start: int, end: int) -> bytes | None:
    last = None
    for chunk in _unzstd_chunks(_Window(f, start, end)):
        if chunk:
            last = chunk[-1:]
    return last
