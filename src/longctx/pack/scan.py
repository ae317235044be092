"""Pass 2 of ``data build``: tokenize the given candidates of one file and spill the eligible.

A round asks each file for the candidates (rows of its :mod:`longctx.pack.index`) whose
priority falls inside their group's cut-off and that no earlier round tokenized. Their text
comes from the index's text spill (the corpus is not read again). Every one's real length
is recorded, except where a token bound proves a document its draw did not keep short
(``PROVEN_SHORT``: never eligible, so never tokenized). The eligible ones (kept by their
draw, or long) and the held-out documents asked for have their tokens spilled with compact
numpy metadata. A JSON marker written last makes the round's scan of the file reusable by a
rerun that asks for the same rows.

A split file (:mod:`longctx.pack.parts`) is scanned range by range: a task's rows are the
file's, the range's index and text spill hold those from ``row_offset`` on, and each range
has its own spill, named by :func:`spill_key` (round, range) in the file's spill sequence.

This runs in worker processes (spawned or forked from a server; it imports neither
transformers nor torch).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from longctx.data.token_bound import MAX_BYTES_PER_TOKEN, TokenBound, token_bound
from longctx.mix.input_stats import PROVEN_SHORT
from longctx.mix.strategies import is_long
from longctx.pack.index import index_paths, load_index, unit_stem
from longctx.pack.tok import TokenizerSpec
from longctx.stage import read_json_object, save_npz_atomic, write_json_atomic

BATCH_DOCS = 512
BATCH_BYTES = 1 << 20  # bounds the memory of one encode_batch (Encodings are ~100 B/token)
PART_BITS = 20  # a spill key holds the range in its low bits: at most 2**20 ranges a file


@dataclass(frozen=True, eq=False)
class ScanTask:
    index: int  # position of the file in the sorted input list (manifest ``files``)
    round: int
    work_dir: str
    scan_hash: str  # the index's settings: a marker made under others is not reused
    tokenizer: TokenizerSpec
    long_threshold: int
    rows: np.ndarray  # int64, ascending: candidate rows of the file's index to tokenize
    held_rows: np.ndarray  # int64, ascending: held-out rows to tokenize
    part: int = 0  # the file's range whose index holds these rows
    row_offset: int = 0  # the file's candidate row of the range's first candidate
    held_offset: int = 0  # ... and of its first held-out document

    @property
    def key(self) -> int:
        return spill_key(self.round, self.part)

    def digest(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.rows, dtype=np.int64).tobytes())
        h.update(b"held")
        h.update(np.ascontiguousarray(self.held_rows, dtype=np.int64).tobytes())
        return h.hexdigest()


def spill_key(rnd: int, part: int) -> int:
    """The number of a range's spill in a round (a file's spills are read in key order)."""
    if not 0 <= part < 1 << PART_BITS:
        raise ValueError(f"range {part}: a file has at most {1 << PART_BITS} ranges")
    return rnd << PART_BITS | part


def spill_paths(work_dir: str | Path, index: int, key: int) -> tuple[Path, Path, Path]:
    """(tokens, metadata, marker) of one file's (range's) scan in one round (``key``:
    :func:`spill_key`; round r of an unsplit file is key r << PART_BITS, 0 for round 0)."""
    stem = unit_stem(work_dir, index, key & ((1 << PART_BITS) - 1))
    stem = stem.with_name(f"{stem.name}.r{key >> PART_BITS:03d}")
    return (stem.with_name(stem.name + ".tokens.bin"), stem.with_name(stem.name + ".meta.npz"),
            stem.with_name(stem.name + ".done"))


def load_done(task: ScanTask) -> dict[str, Any] | None:
    """The summary of a finished scan of these rows with the same settings, if any."""
    tokens, meta, marker = spill_paths(task.work_dir, task.index, task.key)
    summary = read_json_object(marker)
    if (summary is None or summary.get("scan_hash") != task.scan_hash
            or summary.get("rows") != task.digest() or summary.get("part") != task.part or not tokens.is_file() or not meta.is_file()):
        return None
    return summary


def load_meta(work_dir: str | Path, index: int, key: int) -> dict[str, np.ndarray]:
    """A round's metadata (``key``: :func:`spill_key`): ``row``, ``length`` (every row asked
    for, the file's rows), ``start`` (token offset in the spill, -1 where not eligible, so
    not spilled); ``held_row``, ``held_length``, ``held_start``."""
    with np.load(spill_paths(work_dir, index, key)[1]) as z:
        return {k: z[k] for k in z.files}


def init_worker(threads: int = 1) -> None:
    """Worker processes parallelise across files; each encodes on its own ``threads``-thread
    pool. The parallel encode path is used even with one thread: on the 2-core benchmark
    machine it cost ~14% less CPU per token than ``TOKENIZERS_PARALLELISM=false``."""
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    os.environ["RAYON_NUM_THREADS"] = str(max(1, threads))


def _raw_batches(text_file: Any, starts: np.ndarray, nbytes: np.ndarray):
    """(position, UTF-8 bytes) batches of bounded size, read from the index's text spill."""
    batch: list[tuple[int, bytes]] = []
    size = 0
    fd = text_file.fileno()
    for k, (at, n) in enumerate(zip(starts.tolist(), nbytes.tolist(), strict=True)):
        batch.append((k, os.pread(fd, n, at)))
        size += n
        if len(batch) >= BATCH_DOCS or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _unproven(batch: list[tuple[int, bytes]], keep: np.ndarray, length: np.ndarray,
              bound: TokenBound | None, threshold: int,
              specials: int) -> list[tuple[int, bytes]]:
    """The batch's documents still to tokenize. A document its draw did not keep, of at most
    ``MAX_BYTES_PER_TOKEN`` x threshold bytes, whose token bound
    (:mod:`longctx.data.token_bound`) proves it short is not eligible: it gets
    ``PROVEN_SHORT`` instead."""
    if bound is None:
        return batch
    cap = MAX_BYTES_PER_TOKEN * threshold
    asked = [(k, raw) for k, raw in batch if not keep[k] and len(raw) <= cap]
    if not asked:
        return batch
    uppers = bound.upper([raw for _, raw in asked])
    short = {k for (k, _), up in zip(asked, uppers, strict=True)
             if up is not None and not is_long(up + specials, threshold)}
    for k in short:
        length[k] = PROVEN_SHORT
    return [(k, raw) for k, raw in batch if k not in short] if short else batch


def _spilled(kept: list[bool], threshold: int, j: int, n: int) -> bool:
    """Whether the spill takes a batch's document ``j`` of ``n`` tokens (kept or long): the
    ids of the others are never built."""
    return kept[j] or is_long(n, threshold)


def scan_file(task: ScanTask) -> dict[str, Any]:
    """Tokenize the task's rows; write the spill, its metadata and the marker; return the
    marker's summary."""
    cpu0 = time.process_time()
    tok = task.tokenizer.load()  # the backend is parsed once per process (rust_tokenizer)
    index = load_index(task.work_dir, task.index, task.part)
    tokens_path, meta_path, marker = spill_paths(task.work_dir, task.index, task.key)
    tmp_tokens = tokens_path.with_name(tokens_path.name + ".tmp")
    cols: dict[str, np.ndarray] = {}
    written = 0
    threshold = task.long_threshold
    bound = token_bound(tok.backend)
    specials = tok.special_per_doc
    with open(index_paths(task.work_dir, task.index, task.part)[1], "rb") as text, \
            open(tmp_tokens, "wb") as out:
        for pre, rows, offset in (("", task.rows, task.row_offset),
                                  ("held_", task.held_rows, task.held_offset)):
            local = np.asarray(rows, dtype=np.int64) - offset
            length = np.zeros(len(rows), dtype=np.int64)
            start = np.full(len(rows), -1, dtype=np.int64)
            keep = index["kept"][local] if not pre else np.ones(len(rows), bool)
            at, size = index[pre + "start"][local], index[pre + "nbytes"][local]
            for raw in _raw_batches(text, at, size):
                batch = _unproven(raw, keep, length, bound, threshold, specials)
                if not batch:
                    continue
                kept = [bool(keep[k]) for k, _ in batch]
                texts = [t.decode("utf-8", "surrogatepass") for _, t in batch]
                encoded = tok.encode_documents_where(
                    texts, partial(_spilled, kept, threshold), fast=True)
                for (k, _), (n, ids) in zip(batch, encoded, strict=True):
                    length[k] = n
                    if ids is not None:
                        start[k] = written
                        out.write(ids.tobytes())
                        written += n
            cols[pre + "row"] = np.asarray(rows, dtype=np.int64)
            cols[pre + "length"] = length
            cols[pre + "start"] = start
    save_npz_atomic(meta_path, cols)
    os.replace(tmp_tokens, tokens_path)
    summary = {
        "scan_hash": task.scan_hash,
        "index": task.index,
        "part": task.part,
        "round": task.round,
        "rows": task.digest(),
        "docs": int(len(task.rows) + len(task.held_rows)),
        "tokens": int(cols["length"][cols["length"] > 0].sum() + cols["held_length"].sum()),
        "proven_short": int((cols["length"] == PROVEN_SHORT).sum()),
        "spilled": written,  # tokens in the spill
        "cpu_s": round(time.process_time() - cpu0, 4),
    }
    # last: a marker says the files above are whole
    write_json_atomic(marker, summary, default=None)
    return summary
