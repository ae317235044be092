"""Parallel per-file document length scan: tokens, bytes and characters of every document.

One task per corpus file runs in a worker process and returns compact numpy columns
(:class:`FileLengths`), never texts, so the parent's memory grows only by ~18 bytes per
document. Results arrive in the sorted file order whatever the number of workers, so every
number derived from a scan is identical with ``workers=1`` and ``workers=8``.

Workers receive the tokenizer as its serialized Rust backend (a JSON string, see
``Tokenizer.__reduce__``), not a transformers object: the parent resolves the spec once and
each worker rebuilds the same tokenizer in milliseconds without importing transformers.

Sampling (``sample_docs=N``): every document is read (reading is ~100x cheaper than
tokenizing) and its bytes and characters are counted, but only documents whose stable hash
``h(seed, file, line) < p`` are tokenized, with ``p = N / lines`` from a quick newline count
(row count for parquet). The sample is Poisson (about N documents), depends only on the seed
and document ids, and is the same for any worker count.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longctx.data.readers import Fields, domain_code_dtype, expand_inputs, iter_file
from longctx.data.tokenizer import Tokenizer, load_tokenizer
from longctx.data.workers import ordered_results

# Sampled scans also histogram every document's length in characters (2%-wide log bins), so
# tail statistics (long-token fraction, p99, max) use every document, not just the sample.
CHAR_BIN_FACTOR = 1.02
CHAR_BINS = 1200  # covers up to 1.02**1200 ≈ 2e10 characters per document
_LOG_BIN = 1.0 / math.log(CHAR_BIN_FACTOR)

_BATCH_DOCS = 256
_BATCH_CHARS = 2_000_000
_HASH_SCALE = float(1 << 64)
DEFAULT_FIELDS = Fields()


@dataclass
class FileLengths:
    """Length columns of one file's documents (only the tokenized ones when sampling)."""

    file: str
    key: str  # stable id of the file inside the input set (relative path)
    domains: list[str]  # local domain vocabulary; ``domain`` indexes it
    domain: np.ndarray  # int16, or int32 past 32,768 domains (domain_code_dtype)
    index: np.ndarray  # int64, 1-based line/row of the document in its file
    tokens: np.ndarray  # int64, with the tokenizer's BOS/EOS policy
    bytes: np.ndarray  # int64, UTF-8 bytes of the text
    chars: np.ndarray  # int64, unicode code points of the text
    skipped: Counter = field(default_factory=Counter)
    # Every valid document read, sampled or not: domain -> [docs, bytes, chars, max chars].
    totals: dict[str, list[int]] = field(default_factory=dict)
    # Sampled scans only: domain -> (doc counts, char sums) per char-length bin, all docs.
    char_hist: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class LengthScan:
    """A whole scan: concatenated columns with a global domain vocabulary (first-seen order)."""

    files: list[str]
    domains: list[str]
    file_id: np.ndarray  # int32 index into files
    domain: np.ndarray  # index into domains (int16, or int32 past 32,768 domains)
    index: np.ndarray
    tokens: np.ndarray
    bytes: np.ndarray
    chars: np.ndarray
    skipped: Counter
    totals: dict[str, dict[str, int]]  # domain -> {"docs","bytes","chars","max_chars"}, all docs
    sampled: bool
    sample_rate: float  # p; 1.0 when exact
    tokenizer: dict[str, Any]
    # Sampled scans: domain -> (doc counts, char sums) per length bin over every document read.
    char_hist: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def num_docs(self) -> int:
        return int(self.tokens.shape[0])


def char_bin(chars: np.ndarray) -> np.ndarray:
    """Log-spaced bin of each document length in characters (bin b ~ 1.02**b chars)."""
    c = np.maximum(np.asarray(chars, dtype=np.float64), 1.0)
    return np.minimum((np.log(c) * _LOG_BIN).astype(np.int64), CHAR_BINS - 1)


def _histogram(chars: list[int]) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(chars, dtype=np.float64)
    b = char_bin(arr)
    return (
        np.bincount(b, minlength=CHAR_BINS).astype(np.int64),
        np.bincount(b, weights=arr, minlength=CHAR_BINS),
    )


def doc_hash(seed: int, key: str, index: int) -> float:
    """A uniform number in [0, 1) fixed by the seed and the document's id."""
    h = hashlib.blake2b(f"{seed}\0{key}\0{index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / _HASH_SCALE


def file_keys(files: Sequence[Path]) -> list[str]:
    """Ids for files that do not depend on how they were passed (relative to their common root)."""
    resolved = [Path(f).resolve() for f in files]
    if not resolved:
        return []
    if len(resolved) == 1:
        return [resolved[0].name]
    root = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    return [p.relative_to(root).as_posix() for p in resolved]


def count_records(path: str | Path) -> int:
    """Lines (jsonl) or rows (parquet) of a file, without parsing; for the sampling rate."""
    from longctx.data.readers import PARQUET_SUFFIXES, _decompressed_chunks, _StreamError

    path = Path(path)
    if path.name.endswith(PARQUET_SUFFIXES):
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except Exception:  # noqa: BLE001 - unreadable files are counted when read
            return 0
    n = 0
    last = b"\n"
    try:
        for chunk in _decompressed_chunks(path):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    except (_StreamError, OSError):
        pass
    return n + (last != b"\n")


# ---- worker side -------------------------------------------------------------------------

_WORKER_TOKENIZER: Tokenizer | None = None


def _init_worker(tokenizer: Tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def scan_file(
    path: str,
    key: str,
    tokenizer: Tokenizer | None,
    fields: Fields,
    strict: bool = False,
    sample_rate: float = 1.0,
    seed: int = 0,
) -> FileLengths:
    """Lengths of one file's documents; tokenizes only sampled ones when ``sample_rate < 1``."""
    tok = tokenizer if tokenizer is not None else _WORKER_TOKENIZER
    assert tok is not None, "worker has no tokenizer"
    skipped: Counter = Counter()
    local: dict[str, int] = {}
    totals: dict[str, list[int]] = {}
    dom: list[int] = []
    idx: list[int] = []
    nbytes: list[int] = []
    nchars: list[int] = []
    tokens: list[int] = []
    batch: list[str] = []
    batch_chars = 0
    sampling = sample_rate < 1.0
    all_chars: dict[str, list[int]] = {}

    def flush() -> None:
        nonlocal batch_chars
        if batch:
            tokens.extend(tok.count_tokens(batch))
            batch.clear()
            batch_chars = 0

    for doc in iter_file(path, fields, skipped, strict):
        d = local.setdefault(doc.domain, len(local))
        b = len(doc.text.encode("utf-8"))
        c = len(doc.text)
        t = totals.setdefault(doc.domain, [0, 0, 0, 0])
        t[0] += 1
        t[1] += b
        t[2] += c
        t[3] = max(t[3], c)
        if sampling:
            all_chars.setdefault(doc.domain, []).append(c)
            if doc_hash(seed, key, doc.index) >= sample_rate:
                continue
        dom.append(d)
        idx.append(doc.index)
        nbytes.append(b)
        nchars.append(c)
        batch.append(doc.text)
        batch_chars += c
        if len(batch) >= _BATCH_DOCS or batch_chars >= _BATCH_CHARS:
            flush()
    flush()
    return FileLengths(
        file=path,
        key=key,
        domains=list(local),
        domain=np.asarray(dom, dtype=domain_code_dtype(len(local))),
        index=np.asarray(idx, dtype=np.int64),
        tokens=np.asarray(tokens, dtype=np.int64),
        bytes=np.asarray(nbytes, dtype=np.int64),
        chars=np.asarray(nchars, dtype=np.int64),
        skipped=skipped,
        totals=totals,
        char_hist={d: _histogram(v) for d, v in all_chars.items()},
    )


# ---- parent side -------------------------------------------------------------------------


def _resolve_tokenizer(spec: Any) -> Tokenizer:
    return spec if isinstance(spec, Tokenizer) else load_tokenizer(spec)


@dataclass(frozen=True)
class LengthTask:
    """One file of a length scan (the step's picklable input)."""

    path: str
    key: str
    fields: Fields
    strict: bool
    sample_rate: float
    seed: int
    tokenizer: Tokenizer | None = None  # None in a worker process: the one it was started with


def scan_task(task: LengthTask) -> FileLengths:
    """The pool's step: :func:`scan_file` of one task."""
    return scan_file(task.path, task.key, task.tokenizer, task.fields, task.strict,
                     task.sample_rate, task.seed)


def iter_scan(
    files: Sequence[str | Path],
    tokenizer_spec: Any = None,
    fields: Fields = DEFAULT_FIELDS,
    workers: int = 1,
    sample_rate: float = 1.0,
    seed: int = 0,
    strict: bool = False,
    progress: bool = True,
) -> Iterator[FileLengths]:
    """Scan files (already expanded) and yield one :class:`FileLengths` per file, in order.

    At most ``workers + 1`` files are in flight (:mod:`longctx.data.workers`), so memory does
    not grow with the corpus.
    """
    paths = [Path(f) for f in files]
    keys = file_keys(paths)
    tok = _resolve_tokenizer(tokenizer_spec)
    local = tok if workers <= 1 else None  # workers get it once, from _init_worker

    def make_task(k: int) -> LengthTask:
        return LengthTask(str(paths[k]), keys[k], fields, strict, sample_rate, seed, local)

    bar = _Progress(len(paths), enabled=progress)
    results = ordered_results(scan_task, len(paths), make_task, workers,
                              initializer=_init_worker, initargs=(tok,))
    try:
        with closing(results):
            for res in results:
                bar.advance(res)
                yield res
    finally:
        bar.close()


def scan_lengths(
    files: Sequence[str | Path],
    tokenizer_spec: Any = None,
    fields: Fields = DEFAULT_FIELDS,
    workers: int = 1,
    sample_docs: int | None = None,
    seed: int = 0,
    strict: bool = False,
    progress: bool = True,
) -> LengthScan:
    """Scan inputs (files, folders or globs) and return every document's lengths.

    ``sample_docs=None`` tokenizes every document (exact). ``sample_docs=N`` tokenizes about N
    documents chosen by a seeded hash of their ids; bytes/chars/doc counts stay exact.
    """
    paths = expand_inputs(list(files))
    tok = _resolve_tokenizer(tokenizer_spec)
    rate = 1.0
    if sample_docs is not None:
        if sample_docs <= 0:
            raise ValueError(f"sample_docs must be positive, got {sample_docs}")
        lines = sum(count_records(p) for p in paths)
        rate = min(1.0, sample_docs / lines) if lines else 1.0
    vocab: dict[str, int] = {}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("file", "dom", "idx", "tok", "b", "c")}
    skipped: Counter = Counter()
    totals: dict[str, dict[str, int]] = {}
    hist: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for fid, res in enumerate(
        iter_scan(paths, tok, fields, workers, rate, seed, strict, progress)
    ):
        codes = [vocab.setdefault(d, len(vocab)) for d in res.domains]
        remap = np.asarray(codes, dtype=domain_code_dtype(len(vocab)))
        for d, (n, b, c, mx) in res.totals.items():
            vocab.setdefault(d, len(vocab))
            t = totals.setdefault(d, {"docs": 0, "bytes": 0, "chars": 0, "max_chars": 0})
            t["docs"] += n
            t["bytes"] += b
            t["chars"] += c
            t["max_chars"] = max(t["max_chars"], mx)
        for d, (counts, sums) in res.char_hist.items():
            if d in hist:
                hist[d] = (hist[d][0] + counts, hist[d][1] + sums)
            else:
                hist[d] = (counts, sums)
        n = res.tokens.shape[0]
        parts["file"].append(np.full(n, fid, dtype=np.int32))
        parts["dom"].append(remap[res.domain] if n else res.domain)
        parts["idx"].append(res.index)
        parts["tok"].append(res.tokens)
        parts["b"].append(res.bytes)
        parts["c"].append(res.chars)
        skipped.update(res.skipped)

    def cat(k: str, dtype: Any) -> np.ndarray:
        return np.concatenate(parts[k]).astype(dtype, copy=False) if parts[k] else np.zeros(0, dtype)

    return LengthScan(
        files=[str(p) for p in paths],
        domains=list(vocab),
        file_id=cat("file", np.int32),
        domain=cat("dom", domain_code_dtype(len(vocab))),
        index=cat("idx", np.int64),
        tokens=cat("tok", np.int64),
        bytes=cat("b", np.int64),
        chars=cat("c", np.int64),
        skipped=skipped,
        totals={d: totals[d] for d in vocab if d in totals},
        sampled=rate < 1.0,
        sample_rate=rate,
        tokenizer=tok.describe(),
        char_hist={d: hist[d] for d in vocab if d in hist},
    )


class _Progress:
    """The scan's progress bar over files (docs and tokens in the label); silent off a terminal."""

    def __init__(self, total: int, enabled: bool) -> None:
        from longctx.progress import progress_bar

        self.docs = self.tokens = 0
        self.bar = progress_bar(None if enabled else False, transient=True)
        self.bar.start()
        self.task = self.bar.add_task("scan lengths", total=total)

    def advance(self, res: FileLengths) -> None:
        self.docs += int(res.tokens.shape[0])
        self.tokens += int(res.tokens.sum())
        self.bar.update(
            self.task, advance=1,
            description=f"scan lengths: {self.docs:,} docs {self.tokens:,} tokens",
        )

    def close(self) -> None:
        self.bar.stop()
