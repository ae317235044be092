"""Streaming corpus readers: jsonl, jsonl.gz, jsonl.zst and parquet; files, folders and globs.

Records become :class:`Document` (text, domain, where it came from). Bad records never
crash a read and never take good ones with them: each is counted under a reason in a
``Counter`` the caller owns, or, with ``strict=True``, raises :class:`DataError` naming
the file and line. Memory stays flat: files are read line by line (or batch by batch for
parquet), never whole.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

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
TRUNCATED_FILE = "truncated_file"
UNREADABLE_FILE = "unreadable_file"


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


@dataclass(frozen=True)
class Fields:
    """Where text and domain live in a record (dotted paths into nested objects)."""

    text: str = "text"
    domain: str = "meta.redpajama_set_name"


def _has_supported_suffix(name: str) -> bool:
    return name.endswith(SUPPORTED_SUFFIXES)


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Resolve files, folders (recursive) and glob patterns into a sorted, de-duplicated list.

    Raises DataError for an input that matches no readable corpus file, so a typo never
    silently builds from less data.
    """
    out: list[Path] = []
    for raw in inputs:
        s = str(raw)
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and _has_supported_suffix(q.name))
            if not found:
                raise DataError(
                    f"input folder {s} holds no corpus files ({', '.join(SUPPORTED_SUFFIXES)})"
                )
            out.extend(found)
        elif p.is_file():
            if not _has_supported_suffix(p.name):
                raise DataError(
                    f"input file {s}: unsupported format (expected one of {', '.join(SUPPORTED_SUFFIXES)})"
                )
            out.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(s, recursive=True))
            files = [m for m in matches if m.is_file() and _has_supported_suffix(m.name)]
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


def _get_dotted(record: dict, dotted: str) -> tuple[bool, object]:
    node: object = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _open_binary(path: Path) -> io.BufferedIOBase:
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if name.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")
        reader = zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True, closefd=True
        )
        return io.BufferedReader(reader, buffer_size=1 << 20)  # type: ignore[arg-type]
    return open(path, "rb", buffering=1 << 20)


def _record_to_document(record: object, fields: Fields, file: str, index: int) -> Document | str:
    """A Document, or the skip reason for this record."""
    if not isinstance(record, dict):
        return NOT_AN_OBJECT
    ok, text = _get_dotted(record, fields.text)
    if not ok or text is None:
        return MISSING_TEXT
    if not isinstance(text, str):
        return NON_STRING_TEXT
    if not text.strip():
        return EMPTY_TEXT
    ok, domain = _get_dotted(record, fields.domain)
    if not ok or domain is None or (isinstance(domain, str) and not domain.strip()):
        return MISSING_DOMAIN
    return Document(text=text, domain=str(domain), file=file, index=index)


def _skip(
    skipped: Counter, reason: str, file: str, index: int, strict: bool, detail: str = ""
) -> None:
    if strict:
        extra = f" ({detail})" if detail else ""
        raise DataError(f"{file}:{index}: {reason}{extra}")
    skipped[reason] += 1


def iter_jsonl(
    path: Path, fields: Fields, skipped: Counter, strict: bool = False
) -> Iterator[Document]:
    file = str(path)
    index = 0
    try:
        with _open_binary(path) as f:
            for index, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue  # blank lines are layout, not records
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    _skip(skipped, INVALID_UTF8, file, index, strict, str(e))
                    continue
                try:
                    record = json.loads(line)
                except ValueError as e:
                    _skip(skipped, MALFORMED_JSON, file, index, strict, str(e))
                    continue
                doc = _record_to_document(record, fields, file, index)
                if isinstance(doc, str):
                    _skip(skipped, doc, file, index, strict)
                    continue
                yield doc
    except DataError:
        raise
    except (EOFError, OSError, ValueError) as e:
        # gzip raises EOFError/BadGzipFile, zstandard raises ZstdError (a ValueError subclass
        # in some versions, an Exception in others) on a truncated stream.
        _skip(skipped, TRUNCATED_FILE, file, index + 1, strict, f"{type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - zstandard.ZstdError is a plain Exception subclass
        if type(e).__name__ != "ZstdError":
            raise
        _skip(skipped, TRUNCATED_FILE, file, index + 1, strict, f"{type(e).__name__}: {e}")


def iter_parquet(
    path: Path, fields: Fields, skipped: Counter, strict: bool = False, batch_size: int = 1024
) -> Iterator[Document]:
    import pyarrow.parquet as pq

    file = str(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several error types for bad files
        _skip(skipped, UNREADABLE_FILE, file, 0, strict, str(e))
        return
    top_text = fields.text.split(".")[0]
    top_domain = fields.domain.split(".")[0]
    names = set(pf.schema_arrow.names)
    columns = sorted({c for c in (top_text, top_domain) if c in names})
    index = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=columns or None):
        for record in batch.to_pylist():
            index += 1
            doc = _record_to_document(record, fields, file, index)
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
    """Documents of every file the inputs resolve to, files in sorted order."""
    for path in expand_inputs(list(inputs)):
        yield from iter_file(path, fields, skipped, strict)
