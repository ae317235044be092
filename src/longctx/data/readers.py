"""Streaming corpus readers: jsonl, jsonl.gz, jsonl.zst and parquet; files, folders and globs.

Records become :class:`Document` (text, domain, where it came from). Bad records never
crash a read and never take good ones with them: each is counted under a reason in a
``Counter`` the caller owns, or, with ``strict=True``, raises :class:`DataError` naming
the file and line. Memory stays flat: files are read line by line (or batch by batch for
parquet), never whole.
"""

from __future__ import annotations

import glob
import io
import json
import os
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import orjson

from longctx.errors import LongctxError

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES

# Reasons a record or file is skipped; manifests count them under these names.
MALFORMED_JSON = "malformed_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_TEXT = "missing_text"
NON_STRING_TEXT = "non_string_text"
EMPTY_TEXT = "empty_text"
MISSING_DOMAIN = "missing_domain"
INVALID_UTF8 = "invalid_utf8"
INVALID_UNICODE = "invalid_unicode"  # a lone surrogate (JSON "\ud800") in the text or domain
INVALID_DOMAIN = "invalid_domain"  # domain is an object or a list, not a name, or too long
TOO_DEEP = "too_deep"  # JSON nested deeper than MAX_JSON_DEPTH
LINE_TOO_LONG = "line_too_long"  # a line over MAX_LINE_BYTES, dropped while it streams
TRUNCATED_FILE = "truncated_file"  # compressed stream ends before its end marker
CORRUPT_FILE = "corrupt_file"  # compressed stream or parquet page cannot be decoded
UNREADABLE_FILE = "unreadable_file"  # cannot be opened at all

SKIP_REASONS = (
    MALFORMED_JSON,
    NOT_AN_OBJECT,
    MISSING_TEXT,
    NON_STRING_TEXT,
    EMPTY_TEXT,
    MISSING_DOMAIN,
    INVALID_DOMAIN,
    INVALID_UTF8,
    INVALID_UNICODE,
    TOO_DEEP,
    LINE_TOO_LONG,
    TRUNCATED_FILE,
    CORRUPT_FILE,
    UNREADABLE_FILE,
)

# Files a stage writes next to its outputs; a folder given as corpus input never reads them.
_STAGE_FILES = frozenset({"manifest.json", "stats.json", "needle.json", "loss.json"})
_CHUNK = 1 << 20
_ZSTD_INPUT = 1 << 12
# Real records nest a few levels; Python's JSON parser recurses per level and dies near 1,000,
# at a depth that depends on the caller's stack. A fixed limit far below that is deterministic.
MAX_JSON_DEPTH = 200
# One line is held in memory whole; a longer one (a file without newlines) is dropped as it
# streams, so memory stays bounded whatever the input.
MAX_LINE_BYTES = 256 << 20
# Domain names label plots, tables and manifests: longer ones are a wrong --domain-field.
MAX_DOMAIN_CHARS = 256


class DataError(LongctxError):
    """A bad input record in strict mode, or an input path that matches nothing."""


@dataclass(frozen=True, slots=True)
class Document:
    text: str
    domain: str
    file: str  # path as resolved from the inputs
    index: int  # 1-based line number (jsonl) or 1-based row number (parquet)

    @property
    def doc_id(self) -> str:
        return f"{self.file}:{self.index}"


def domain_code_dtype(num_domains: int) -> np.dtype:
    """The integer type of domain codes for a vocabulary of ``num_domains`` names: int16 while
    it fits (the shard format's default), int32 beyond 32,768 domains. Readers accept both."""
    return np.dtype(np.int16) if num_domains <= 1 << 15 else np.dtype(np.int32)


DOMAIN_FROM_DIR = "@dir"
DOMAIN_FROM_FILE = "@file"


@dataclass(frozen=True)
class Fields:
    """Where text and domain live in a record (dotted paths into nested objects).

    ``domain`` may also be ``@dir`` (the name of the file's folder, e.g. RedPajama-1T's
    ``arxiv/``, ``book/`` ...) or ``@file`` (the file name without its suffixes), for corpora
    whose records do not name their source.
    """

    text: str = "text"
    domain: str = "meta.redpajama_set_name"

    @cached_property
    def text_path(self) -> tuple[str, ...]:
        return tuple(self.text.split("."))

    @cached_property
    def domain_path(self) -> tuple[str, ...] | None:
        """The domain's keys, or None when the domain comes from the file's path."""
        if self.domain in (DOMAIN_FROM_DIR, DOMAIN_FROM_FILE):
            return None
        return tuple(self.domain.split("."))


def _domain_from_path(file: str, how: str) -> str:
    p = Path(file)
    if how == DOMAIN_FROM_DIR:
        return p.parent.name or "."
    return p.name.split(".")[0]


def _has_supported_suffix(name: str) -> bool:
    return name.endswith(SUPPORTED_SUFFIXES)


def _is_corpus_file(path: Path) -> bool:
    """A file a folder expansion reads: supported suffix, not hidden, not a stage's own JSON."""
    return (
        path.is_file()
        and _has_supported_suffix(path.name)
        and not path.name.startswith(".")
        and path.name not in _STAGE_FILES
    )


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Resolve files, folders (recursive) and glob patterns into a de-duplicated file list.

    Inputs keep the order they were given in; the files of one folder or glob are sorted, so
    the list (and everything derived from it) is deterministic.

    Folders are walked recursively in sorted order; hidden files and the JSON files a stage
    writes (``manifest.json``, ``stats.json``) are not corpus files, so a demo-corpus folder
    can be passed as is. Raises DataError for an input that matches no readable corpus file,
    so a typo never silently builds from less data.
    """
    out: list[Path] = []
    for raw in inputs:
        s = os.path.expanduser(str(raw))
        p = Path(s)
        if p.is_dir():
            found = sorted(
                q
                for q in p.rglob("*")
                if _is_corpus_file(q) and not any(part.startswith(".") for part in q.relative_to(p).parts)
            )
            if not found:
                raise DataError(
                    f"input folder {s} holds no corpus files ({', '.join(SUPPORTED_SUFFIXES)})"
                )
            out.extend(found)
        elif p.is_file():
            if not _has_supported_suffix(p.name):
                raise DataError(
                    f"input file {s}: unsupported format "
                    f"(expected one of {', '.join(SUPPORTED_SUFFIXES)})"
                )
            out.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(s, recursive=True))
            files = [m for m in matches if _is_corpus_file(m)]
            if not files:
                raise DataError(f"input {s} matches no corpus file")
            out.extend(files)
    seen: set[Path] = set()
    unique = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _get_path(record: object, path: tuple[str, ...]) -> tuple[bool, object]:
    """(found, value) of the nested keys ``path`` (a dotted field, split) in a record."""
    node = record
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


class _StreamError(Exception):
    """A compressed stream ended early (``reason`` = truncated_file) or cannot be decoded.

    ``partial`` is the unfinished last line when the stream stopped (set by
    :func:`_iter_lines`): a complete record that lacked only its newline is still kept.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.partial: bytes | None = None


def _decompressed_chunks(path: Path) -> Iterator[bytes]:
    """Decompressed bytes of a file in ~1 MiB chunks.

    We drive the decompressors ourselves because zstandard's ``stream_reader`` silently
    returns a short stream on a truncated .zst, which would turn a cut-off file into a bogus
    "malformed line". Here every byte decoded before the cut is yielded, then
    :class:`_StreamError` says why the stream stopped. Concatenated gzip members and zstd
    frames are read across.
    """
    name = path.name
    with open(path, "rb") as f:
        if name.endswith(".gz"):
            yield from _gunzip_chunks(f)
        elif name.endswith(".zst"):
            yield from _unzstd_chunks(f)
        else:
            while block := f.read(_CHUNK):
                yield block


def _gunzip_chunks(f: io.BufferedReader) -> Iterator[bytes]:
    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    started = False  # a member is open and has not reached its end marker
    while block := f.read(_CHUNK):
        while block:
            if not started and not block.strip(b"\0"):
                break  # zero padding after a member (tape blocks): gzip ignores it too
            started = True
            try:
                out = dec.decompress(block, _CHUNK)  # bounded output: memory stays flat
            except zlib.error as e:
                raise _StreamError(CORRUPT_FILE, f"zlib.error: {e}") from None
            if out:
                yield out
            if dec.eof:
                block = dec.unused_data
                dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
                started = False
            else:
                block = dec.unconsumed_tail
    if started and not dec.eof:
        raise _StreamError(TRUNCATED_FILE, "gzip stream ends before its end marker")


def _unzstd_chunks(f: io.BufferedReader) -> Iterator[bytes]:
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dec = dctx.decompressobj()
    started = False  # a frame is open and has not reached its end marker
    # zstandard's decompressobj has no output limit, so feed it small pieces: one piece's
    # output is bounded by the piece times the compression ratio (~4x for text; 32,768x at
    # most, so a 4 KiB piece of a zstd bomb still decodes to at most 128 MiB).
    while data := f.read(_CHUNK):
        view = memoryview(data)
        for pos in range(0, len(view), _ZSTD_INPUT):
            block = view[pos : pos + _ZSTD_INPUT]
            while block:
                started = True
                try:
                    out = dec.decompress(block)
                except zstandard.ZstdError as e:
                    raise _StreamError(CORRUPT_FILE, f"ZstdError: {e}") from None
                if out:
                    yield out
                if dec.eof:
                    block = dec.unused_data
                    dec = dctx.decompressobj()
                    started = False
                else:
                    block = b""
    if started and not dec.eof:
        raise _StreamError(TRUNCATED_FILE, "zstd stream ends before its end marker")


def _iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes | None]:
    """Raw lines (without the newline) of a stream of (decompressed) byte chunks.

    A line longer than ``MAX_LINE_BYTES`` comes as ``None``: its bytes are dropped as they
    arrive, so a file without newlines cannot fill memory. A line spanning chunks is
    collected as a list and joined once (no quadratic re-copying of a long line).
    """
    partial: list[bytes] = []
    size = 0
    too_long = False
    try:
        for chunk in chunks:
            pieces = chunk.split(b"\n")
            tail = pieces.pop()
            if pieces:
                first = pieces[0]
                if too_long or size + len(first) > MAX_LINE_BYTES:
                    pieces[0] = None
                elif partial:
                    pieces[0] = b"".join([*partial, first])
                partial, size, too_long = [], 0, False
                for line in pieces:
                    yield line if line is None or len(line) <= MAX_LINE_BYTES else None
            if tail and not too_long:
                partial.append(tail)
                size += len(tail)
                if size > MAX_LINE_BYTES:
                    partial, too_long = [], True
    except _StreamError as e:
        e.partial = None if too_long else b"".join(partial)
        raise
    if too_long:
        yield None
    elif partial:
        yield b"".join(partial)


def _has_surrogate_escape(raw: bytes) -> bool:
    """True when a JSON line escapes a UTF-16 surrogate (only then can text be invalid UTF-8)."""
    return b"\\ud" in raw or b"\\uD" in raw


def _has_lone_surrogate(s: str) -> bool:
    """True when ``s`` holds a lone surrogate: it cannot be written as UTF-8 anywhere."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _too_deep(record: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when a parsed record nests containers deeper than ``limit`` (iterative walk)."""
    stack = [(record, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _domain_reason(domain: str) -> str | None:
    """Why a domain name is unusable, or None."""
    if len(domain) > MAX_DOMAIN_CHARS:
        return INVALID_DOMAIN
    if not domain.isascii() and _has_lone_surrogate(domain):
        return INVALID_UNICODE
    return None


_DOMAIN_MEMO = 1024  # domain values whose check is remembered per file (a corpus has a few)


_REREAD = "reread"  # (not a skip reason) a domain number orjson may have read inexactly


def _record_to_document(
    record: object, fields: Fields, file: str, index: int, memo: dict | None = None,
    *, exact_numbers: bool = True,
) -> Document | str:
    """A Document, or the skip reason for this record. ``memo`` (one per file) remembers each
    domain value's outcome: records repeat a few names, and checking one costs as much as
    the rest of the record. Without ``exact_numbers`` (orjson reads integers beyond 64 bits
    as floats) a float domain gives ``_REREAD``."""
    if not isinstance(record, dict):
        return NOT_AN_OBJECT
    ok, text = _get_path(record, fields.text_path)
    if not ok or text is None:
        return MISSING_TEXT
    if not isinstance(text, str):
        return NON_STRING_TEXT
    if not text or text.isspace():  # (what strip() removes, without copying the text)
        return EMPTY_TEXT
    path = fields.domain_path
    if path is None:
        domain = _domain_from_path(file, fields.domain)  # a path may hold undecodable bytes
        reason = _domain_reason(domain)
    else:
        ok, value = _get_path(record, path)
        if not ok or value is None:
            return MISSING_DOMAIN
        if isinstance(value, (dict, list, tuple)):
            return INVALID_DOMAIN
        if not exact_numbers and isinstance(value, float):
            return _REREAD
        got = memo.get(value) if memo is not None and type(value) is str else None
        if got is None:
            got = _check_domain(value)
            if memo is not None and type(value) is str and len(memo) < _DOMAIN_MEMO:
                memo[value] = got
        domain, reason = got
    if reason:
        return reason
    return Document(text, domain, file, index)


def _check_domain(value: object) -> tuple[str, str | None]:
    """(name, why it is unusable or None) of a scalar domain value."""
    if isinstance(value, str) and not value.strip():
        return "", MISSING_DOMAIN
    domain = str(value)
    return domain, _domain_reason(domain)


def _skip(
    skipped: Counter, reason: str, file: str, index: int, strict: bool, detail: str = ""
) -> None:
    if strict:
        extra = f" ({detail})" if detail else ""
        where = f"{file}:{index}" if index else file
        raise DataError(f"{where}: {reason}{extra}")
    skipped[reason] += 1


def _parse_line(
    raw: bytes | None, fields: Fields, file: str, index: int, memo: dict | None = None
) -> Document | tuple[str, str] | None:
    """One jsonl line: a Document, (skip reason, detail), or None for a blank line."""
    if raw is None:
        return LINE_TOO_LONG, f"longer than {MAX_LINE_BYTES:,} bytes"
    if index == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark is not part of the first record
    if not raw or raw.isspace():
        return None  # blank lines are layout, not records
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:  # Python's json may still read it, and names the reason
        doc: Document | str = _REREAD
    else:
        doc = _record_to_document(record, fields, file, index, memo, exact_numbers=False)
    strict = doc is not _REREAD  # orjson's record stands
    if not strict:
        record = _stdlib_record(raw)
        if isinstance(record, tuple):  # (a parsed record is never a tuple)
            return record
        doc = _record_to_document(record, fields, file, index, memo)
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _too_deep(record):
        return TOO_DEEP, f"nested deeper than {MAX_JSON_DEPTH}"
    if isinstance(doc, str):
        return doc, ""
    # orjson refuses lone surrogates; in what the standard parser read, only an escaped one
    # can be there, and a text that holds one is not ASCII (isascii() is a flag lookup).
    if (not strict and not doc.text.isascii() and _has_surrogate_escape(raw)
            and _has_lone_surrogate(doc.text)):
        return INVALID_UNICODE, "lone surrogate in the text"
    return doc


def _stdlib_record(raw: bytes) -> object:
    """A line as Python's own parser reads it, or (skip reason, detail): for a line orjson
    refused (Python's parser names the reason, and takes what orjson, strict RFC 8259, does
    not: NaN, lone surrogate escapes, nesting past orjson's limit) or may have read
    inexactly (a float domain: orjson reads integers beyond 64 bits as floats)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return INVALID_UTF8, str(e)
    try:
        return json.loads(line)
    except RecursionError:
        return TOO_DEEP, f"nested deeper than {MAX_JSON_DEPTH}"
    except ValueError as e:
        return MALFORMED_JSON, str(e)


def iter_jsonl(
    path: Path, fields: Fields, skipped: Counter, strict: bool = False
) -> Iterator[Document]:
    """Documents of a jsonl / jsonl.gz / jsonl.zst file; ``index`` is the 1-based line number."""
    yield from iter_jsonl_chunks(_decompressed_chunks(path), str(path), fields, skipped, strict)


def iter_jsonl_chunks(
    chunks: Iterable[bytes],
    file: str,
    fields: Fields,
    skipped: Counter,
    strict: bool = False,
    first_index: int = 1,
) -> Iterator[Document]:
    """Documents of jsonl bytes arriving in chunks whose first line is line ``first_index`` of
    ``file``: the whole of a file, or one byte range of it (:mod:`longctx.data.ranges`)."""
    index = first_index - 1
    memo: dict = {}
    try:
        for index, raw in enumerate(_iter_lines(chunks), start=first_index):
            got = _parse_line(raw, fields, file, index, memo)
            if isinstance(got, Document):
                yield got
            elif got is not None:
                _skip(skipped, got[0], file, index, strict, got[1])
    except _StreamError as e:
        # The line being assembled when the stream stopped is kept if it is a whole record
        # (zcat prints it too); otherwise it is the casualty, counted under the stream's
        # reason. Everything before it was yielded.
        got = _parse_line(e.partial, fields, file, index + 1, memo) if e.partial else None
        if isinstance(got, Document):
            yield got
            index += 1
        _skip(skipped, e.reason, file, index + 1, strict, str(e))
    except OSError as e:
        _skip(skipped, UNREADABLE_FILE, file, index + 1 if index else 0, strict, str(e))


def iter_parquet(
    path: Path,
    fields: Fields,
    skipped: Counter,
    strict: bool = False,
    batch_size: int = 1024,
    row_groups: Sequence[int] | None = None,
    first_index: int = 1,
) -> Iterator[Document]:
    """Documents of a parquet file, read batch by batch; ``index`` is the 1-based row number.

    ``row_groups`` reads only those row groups (one range of a split file), whose first row
    is row ``first_index`` of the file."""
    import pyarrow.parquet as pq

    file = str(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several error types for bad files
        _skip(skipped, UNREADABLE_FILE, file, 0, strict, str(e))
        return
    tops = {fields.text_path[0], *(fields.domain_path or ())[:1]}  # the columns records need
    columns = sorted(tops & set(pf.schema_arrow.names))
    index = first_index - 1
    memo: dict = {}
    batches = pf.iter_batches(batch_size=batch_size, columns=columns, row_groups=row_groups)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - a corrupt page or invalid UTF-8 in a string column
            _skip(skipped, CORRUPT_FILE, file, index + 1, strict, f"{type(e).__name__}: {e}")
            return
        if not columns:
            # Neither field exists in the schema: every row lacks its text.
            for _ in range(batch.num_rows):
                index += 1
                _skip(skipped, MISSING_TEXT, file, index, strict)
            continue
        for record in batch.to_pylist():
            index += 1
            doc = _record_to_document(record, fields, file, index, memo)
            if isinstance(doc, str):
                _skip(skipped, doc, file, index, strict)
                continue
            yield doc


def iter_file(
    path: str | Path,
    fields: Fields = Fields(),
    skipped: Counter | None = None,
    strict: bool = False,
) -> Iterator[Document]:
    """Documents of one corpus file, in file order."""
    path = Path(path)
    if skipped is None:
        skipped = Counter()
    if path.name.endswith(PARQUET_SUFFIXES):
        yield from iter_parquet(path, fields, skipped, strict)
    else:
        yield from iter_jsonl(path, fields, skipped, strict)


def iter_documents(
    inputs: Iterable[str | Path],
    fields: Fields = Fields(),
    skipped: Counter | None = None,
    strict: bool = False,
) -> Iterator[Document]:
    """Documents of every file the inputs resolve to, in :func:`expand_inputs` order."""
    for path in expand_inputs(list(inputs)):
        yield from iter_file(path, fields, skipped, strict)
