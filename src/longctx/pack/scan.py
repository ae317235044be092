"""Scan one corpus file: read, draw, tokenize only what selection can use, spill to disk.

This runs in worker processes (spawned; it imports neither transformers nor torch). For
each document it draws (keep u, priority) from (seed, stable doc id). A document whose
UTF-8 byte count proves it shorter than the threshold and whose draw rejects it is never
tokenized; everything else is tokenized in batches. Eligible documents' tokens go to a raw
spill file with compact numpy metadata, and a JSON marker written last makes the file's scan
reusable by an interrupted build that is rerun.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longctx.data.readers import Document, Fields, domain_code_dtype, iter_file
from longctx.mix.heldout import heldout_draw, is_heldout
from longctx.mix.sampling import doc_draws, keeps_short
from longctx.mix.strategies import is_long
from longctx.pack.tok import TokenizerSpec

BATCH_DOCS = 512
BATCH_BYTES = 1 << 20  # bounds the memory of one encode_batch (Encodings are ~100 B/token)

STAT_KEYS = (
    "docs",  # documents read
    "bytes",  # their UTF-8 bytes
    "tok_docs",  # documents tokenized
    "tok_tokens",
    "drawn_docs",  # byte-provably short docs kept by the draw (a random sample: token ratio)
    "drawn_tokens",
    "drawn_bytes",
    "untok_docs",  # byte-provably short docs rejected by the draw, never tokenized
    "untok_bytes",
    "long_docs",  # docs with >= threshold tokens (always tokenized)
    "long_tokens",
    "kept_docs",  # eligible docs (spilled)
    "kept_tokens",
    "kept_long_tokens",
    "covered_docs",  # docs of a domain whose budget was already covered: not drawn, not tokenized
    "covered_bytes",
)


@dataclass(frozen=True)
class ScanTask:
    index: int  # position of the file in the sorted input list (manifest ``files``)
    path: str
    rel: str  # stable file id used in document ids
    work_dir: str
    scan_hash: str
    tokenizer: TokenizerSpec
    text_field: str
    domain_field: str
    seed: int
    long_threshold: int
    keep: float  # probability a short doc is eligible (1.0: no length rule)
    strict: bool
    covered: tuple[str, ...] = ()  # domains whose pool is already frozen: count only
    heldout: float = 0.0  # fraction of documents (by content hash) set aside for evaluation
    heldout_seed: int = 0

    @property
    def stem(self) -> Path:
        return Path(self.work_dir) / f"{self.index:07d}"


def marker_path(task: ScanTask) -> Path:
    return task.stem.with_suffix(".done")  # JSON inside; not a corpus suffix


def tokens_path(work_dir: str | Path, index: int) -> Path:
    return Path(work_dir) / f"{index:07d}.tokens.bin"


def meta_path(work_dir: str | Path, index: int) -> Path:
    return Path(work_dir) / f"{index:07d}.meta.npz"


def heldout_paths(work_dir: str | Path, index: int) -> tuple[Path, Path]:
    """(tokens, metadata) of a file's held-out documents."""
    stem = Path(work_dir) / f"{index:07d}.heldout"
    return stem.with_suffix(".bin"), stem.with_suffix(".npz")


def load_done(task: ScanTask) -> dict[str, Any] | None:
    """The summary of a finished scan of this file with the same scan settings, if any."""
    p = marker_path(task)
    if not p.is_file():
        return None
    try:
        summary = json.loads(p.read_text())
    except ValueError:
        return None
    if summary.get("scan_hash") != task.scan_hash:
        return None
    if not tokens_path(task.work_dir, task.index).is_file():
        return None
    if task.heldout and not all(p.is_file() for p in heldout_paths(task.work_dir, task.index)):
        return None
    return summary


class _Stats(dict):
    """Per-domain counters, created on first use."""

    def __missing__(self, key: str) -> Counter:
        c = self[key] = Counter()
        return c


_TOKENIZERS: dict[TokenizerSpec, Any] = {}


def _tokenizer(spec: TokenizerSpec) -> Any:
    tok = _TOKENIZERS.get(spec)
    if tok is None:
        tok = _TOKENIZERS[spec] = spec.load()
    return tok


def init_worker() -> None:
    """Worker processes parallelise across files; one tokenizer thread each."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


FROZEN_FILE = "frozen.json"  # the build's currently frozen domains, rewritten as they change


class _Frozen:
    """Domains this scan may skip: the task's set, plus any the build freezes meanwhile
    (re-read from ``FROZEN_FILE`` when it changes, checked every 64 documents). Skipping is
    only ever a saving: the build ignores frozen domains' documents wherever they come from,
    and rescans a file that skipped a domain it turns out to need."""

    def __init__(self, task: ScanTask) -> None:
        self.path = Path(task.work_dir) / FROZEN_FILE
        self.domains = set(task.covered)
        self.skipped: set[str] = set()  # domains with at least one skipped document
        self._mtime: int | None = None
        self._n = 0

    def skips(self, domain: str) -> bool:
        self._n += 1
        if self._n % 64 == 1:
            try:
                mtime = os.stat(self.path).st_mtime_ns
                if mtime != self._mtime:
                    self._mtime = mtime
                    self.domains |= set(json.loads(self.path.read_text()))
            except (OSError, ValueError):
                pass
        if domain in self.domains:
            self.skipped.add(domain)
            return True
        return False


def write_frozen(work_dir: str | Path, domains: set[str]) -> None:
    path = Path(work_dir) / FROZEN_FILE
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(sorted(domains)))
    os.replace(tmp, path)


def _batches(
    task: ScanTask, docs: Iterator[Document], stats: dict[str, Counter], frozen: _Frozen,
    held: list[tuple[Document, int]],
) -> Iterator:
    """Yield lists of (doc, u, priority, nbytes, needs_tokens) in file order; held-out
    documents go to ``held`` instead (before any other rule, so the held-out set does not
    depend on the strategy or on which domains are frozen) and count nowhere else."""
    specials = task.tokenizer.specials_per_doc
    batch: list = []
    size = 0
    for doc in docs:
        if task.heldout:
            hu, hprio = heldout_draw(task.heldout_seed, doc.text)
            if is_heldout(hu, task.heldout):
                held.append((doc, hprio))
                continue
        nbytes = len(doc.text.encode("utf-8"))
        st = stats[doc.domain]
        st["docs"] += 1
        st["bytes"] += nbytes
        if frozen.skips(doc.domain):
            st["covered_docs"] += 1
            st["covered_bytes"] += nbytes
            continue
        u, prio = doc_draws(task.seed, f"{task.rel}:{doc.index}")
        # A token covers at least one byte (a SentencePiece dummy prefix may add one more),
        # so a doc with nbytes + specials + 1 < threshold tokens cannot be long.
        provably_short = nbytes + specials + 1 < task.long_threshold
        if provably_short and not keeps_short(u, task.keep):
            st["untok_docs"] += 1
            st["untok_bytes"] += nbytes
            continue
        batch.append((doc, u, prio, nbytes, provably_short))
        size += nbytes
        if len(batch) >= BATCH_DOCS or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def scan_file(task: ScanTask) -> dict[str, Any]:
    """Scan one file; write its spill and marker; return the marker's summary."""
    cpu0 = time.process_time()
    tok = _tokenizer(task.tokenizer)
    fields = Fields(text=task.text_field, domain=task.domain_field)
    skipped: Counter = Counter()
    stats = _Stats()
    domains: list[str] = []
    domain_code: dict[str, int] = {}
    lines: list[int] = []
    dcodes: list[int] = []
    lengths: list[int] = []
    prios: list[int] = []
    tpath = tokens_path(task.work_dir, task.index)
    tmp_tokens = tpath.with_name(tpath.name + ".tmp")
    Path(task.work_dir).mkdir(parents=True, exist_ok=True)
    with open(tmp_tokens, "wb") as out:
        docs = iter_file(task.path, fields, skipped, task.strict)
        frozen = _Frozen(task)
        held: list[tuple[Document, int]] = []
        for batch in _batches(task, docs, stats, frozen, held):
            encoded = tok.encode_documents([b[0].text for b in batch], fast=True)
            for (doc, u, prio, nbytes, drawn), ids in zip(batch, encoded, strict=True):
                n = len(ids)
                st = stats[doc.domain]
                st["tok_docs"] += 1
                st["tok_tokens"] += n
                long = is_long(n, task.long_threshold)
                if long:
                    st["long_docs"] += 1
                    st["long_tokens"] += n
                elif drawn:
                    st["drawn_docs"] += 1
                    st["drawn_tokens"] += n
                    st["drawn_bytes"] += nbytes
                if not long and not keeps_short(u, task.keep):
                    continue
                st["kept_docs"] += 1
                st["kept_tokens"] += n
                st["kept_long_tokens"] += n if long else 0
                code = domain_code.get(doc.domain)
                if code is None:
                    code = domain_code[doc.domain] = len(domains)
                    domains.append(doc.domain)
                lines.append(doc.index)
                dcodes.append(code)
                lengths.append(n)
                prios.append(prio)
                out.write(ids.tobytes())
    mpath = meta_path(task.work_dir, task.index)
    tmp_meta = mpath.with_name(mpath.name + ".tmp.npz")
    np.savez(
        tmp_meta,
        line=np.asarray(lines, dtype=np.int64),
        domain=np.asarray(dcodes, dtype=domain_code_dtype(len(domains))),
        length=np.asarray(lengths, dtype=np.int64),
        priority=np.asarray(prios, dtype=np.uint64),
    )
    heldout = _write_heldout(task, tok, held) if task.heldout else None
    os.replace(tmp_tokens, tpath)
    os.replace(tmp_meta, mpath)
    summary = {
        "scan_hash": task.scan_hash,
        "index": task.index,
        "file": task.rel,
        "covered": sorted(frozen.skipped),  # domains it skipped any document of
        "domains": domains,  # codes used in the meta file
        "stats": {d: {k: int(c.get(k, 0)) for k in STAT_KEYS} for d, c in sorted(stats.items())},
        "skipped": dict(sorted(skipped.items())),
        "cpu_s": round(time.process_time() - cpu0, 4),
    }
    if heldout is not None:
        summary["heldout"] = heldout
    tmp_marker = marker_path(task).with_suffix(".done.tmp")
    tmp_marker.write_text(json.dumps(summary))
    os.replace(tmp_marker, marker_path(task))
    return summary


def _write_heldout(task: ScanTask, tok: Any, held: list[tuple[Document, int]]) -> dict[str, Any]:
    """Tokenize a file's held-out documents whole and spill them beside its scan."""
    domains: list[str] = []
    code: dict[str, int] = {}
    cols: dict[str, list[int]] = {"line": [], "domain": [], "length": [], "priority": []}
    tpath, mpath = heldout_paths(task.work_dir, task.index)
    tmp = tpath.with_name(tpath.name + ".tmp")
    with open(tmp, "wb") as out:
        for k in range(0, len(held), BATCH_DOCS):
            batch = held[k : k + BATCH_DOCS]
            for (doc, prio), ids in zip(
                batch, tok.encode_documents([d.text for d, _ in batch], fast=True), strict=True
            ):
                if doc.domain not in code:
                    code[doc.domain] = len(domains)
                    domains.append(doc.domain)
                cols["line"].append(doc.index)
                cols["domain"].append(code[doc.domain])
                cols["length"].append(len(ids))
                cols["priority"].append(prio)
                out.write(ids.tobytes())
    tmp_meta = mpath.with_name(mpath.name + ".tmp.npz")
    np.savez(
        tmp_meta,
        line=np.asarray(cols["line"], dtype=np.int64),
        domain=np.asarray(cols["domain"], dtype=np.int64),
        length=np.asarray(cols["length"], dtype=np.int64),
        priority=np.asarray(cols["priority"], dtype=np.uint64),
    )
    os.replace(tmp, tpath)
    os.replace(tmp_meta, mpath)
    return {"domains": domains, "docs": len(held), "tokens": int(sum(cols["length"]))}


def scan_or_load(task: ScanTask) -> dict[str, Any]:
    return load_done(task) or scan_file(task)
