"""Pass 1 of ``data build``: index one corpus file without tokenizing it (but a small sample).

For every document: the held-out draw (a hash of its text); otherwise the keep draw and the
priority from (seed, ``<file id>:<line>``), exactly as selection uses them. A document whose
UTF-8 bytes prove it shorter than the threshold and whose keep draw rejects it can never be
eligible: it is only counted. Every other one is a *candidate*: its line, domain, bytes,
priority and kept flag go to a compact ``.npz`` index (held-out documents to their own
arrays) and its UTF-8 text to a raw text spill, so later rounds tokenize candidates in
priority order, only as far as the budgets need, without decompressing and parsing the
corpus again.

A uniform random sample is tokenized for the tokens-per-byte ratio of each domain: the
documents whose keep draw falls below ``SAMPLE_RATE`` (the draw is independent of length),
topped up per domain and file with the next-lowest draws to ``TOPUP_DOCS`` documents or
``TOPUP_BYTES`` bytes, each sampled text cut to ``SAMPLE_CHARS`` characters (so one huge
document cannot make the sample expensive). A JSON marker written last makes the index
reusable by a rerun with the same settings.
"""

from __future__ import annotations

import heapq
import json
import os
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from longctx.data.readers import Fields, domain_code_dtype, iter_file
from longctx.mix.heldout import heldout_draw, is_heldout
from longctx.mix.sampling import doc_draws, keeps_short
from longctx.pack.tok import TokenizerSpec

SAMPLE_RATE = 0.01
TOPUP_DOCS = 32
TOPUP_BYTES = 32 << 10
SAMPLE_CHARS = 4 << 10
SAMPLE_BATCH_CHARS = 1 << 20  # bounds the memory of one encode_batch
SAMPLE_SETTINGS = [SAMPLE_RATE, TOPUP_DOCS, TOPUP_BYTES, SAMPLE_CHARS]

INDEX_KEYS = (
    "docs",  # documents read (held-out ones not included)
    "bytes",  # their UTF-8 bytes
    "candidate_docs",  # documents that may be eligible (indexed)
    "candidate_bytes",
    "kept_docs",  # candidates whose keep draw keeps them whatever their length
    "kept_bytes",
    "untok_docs",  # provably short and rejected by the keep draw: never eligible
    "untok_bytes",
    "sample_docs",  # the tokenized sample (text cut to SAMPLE_CHARS)
    "sample_bytes",
    "sample_tokens",  # with BOS/EOS
    "heldout_docs",
    "heldout_bytes",
)


@dataclass(frozen=True)
class IndexTask:
    index: int  # position of the file in the sorted input list (manifest ``files``)
    path: str
    rel: str  # stable file id used in document ids
    work_dir: str
    index_hash: str  # the settings the index depends on (a rerun with others redoes it)
    tokenizer: TokenizerSpec
    text_field: str
    domain_field: str
    seed: int
    long_threshold: int
    keep: float  # probability a short document is eligible (1.0: no length rule)
    strict: bool
    heldout: float = 0.0  # fraction of documents (by content hash) set aside for evaluation
    heldout_seed: int = 0


def index_paths(work_dir: str | Path, index: int) -> tuple[Path, Path, Path]:
    """(arrays, text spill, marker) of a file's index."""
    stem = Path(work_dir) / f"{index:07d}.index"
    return (stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".text"),
            stem.with_name(stem.name + ".done"))


def load_index_done(task: IndexTask) -> dict[str, Any] | None:
    """The summary of a finished index of this file with the same settings, if any."""
    arrays, text, marker = index_paths(task.work_dir, task.index)
    try:
        summary = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if (summary.get("index_hash") != task.index_hash
            or summary.get("sample") != SAMPLE_SETTINGS or not arrays.is_file()
            or not text.is_file()):
        return None
    return summary


def load_index(work_dir: str | Path, index: int) -> dict[str, np.ndarray]:
    """A file's index arrays: candidates (``line``, ``domain``, ``nbytes``, ``priority``,
    ``kept``, ``start``: byte offset of its text in the spill) and held-out documents
    (``held_line``, ``held_domain``, ``held_nbytes``, ``held_priority``, ``held_start``);
    domain codes index the summary's ``domains``."""
    with np.load(index_paths(work_dir, index)[0]) as z:
        return {k: z[k] for k in z.files}


class _Sample:
    """One domain's tokenized sample: the rate sample as it streams, plus the lowest draws
    above the rate that a top-up may still need (at most TOPUP_DOCS texts held)."""

    def __init__(self) -> None:
        self.reserve: list[tuple[float, int, str, int]] = []  # max-heap by draw: (-u, line, ...)
        self.reserve_bytes = 0

    def offer(self, u: float, line: int, text: str) -> None:
        if len(self.reserve) >= TOPUP_DOCS and -self.reserve[0][0] <= u:
            return  # TOPUP_DOCS lower draws are held already: a top-up never reaches this one
        cut = text[:SAMPLE_CHARS]
        nbytes = len(cut.encode("utf-8", "surrogatepass"))
        heapq.heappush(self.reserve, (-u, line, cut, nbytes))
        self.reserve_bytes += nbytes
        # drop the highest draw while the lower ones already reach a top-up limit
        while len(self.reserve) > TOPUP_DOCS or (
            len(self.reserve) > 1 and self.reserve_bytes - self.reserve[0][3] >= TOPUP_BYTES
        ):
            self.reserve_bytes -= heapq.heappop(self.reserve)[3]

    def topup(self, docs: int, nbytes: int) -> list[tuple[str, int]]:
        """(text, bytes) to add to a rate sample of ``docs`` documents and ``nbytes`` bytes."""
        out = []
        for _, _, cut, n in sorted(self.reserve, key=lambda r: (-r[0], r[1])):
            if docs >= TOPUP_DOCS or nbytes >= TOPUP_BYTES:
                break
            out.append((cut, n))
            docs += 1
            nbytes += n
        return out


class _Tokenized:
    """Tokenize sampled texts in bounded batches; count their tokens per domain."""

    def __init__(self, task: IndexTask, stats: dict[str, Counter]) -> None:
        self.task = task
        self.stats = stats
        self.tok: Any = None
        self.batch: list[tuple[str, str, int]] = []  # (domain, text, bytes)
        self.chars = 0

    def add(self, domain: str, text: str, nbytes: int) -> None:
        self.batch.append((domain, text, nbytes))
        self.chars += len(text)
        if self.chars >= SAMPLE_BATCH_CHARS:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        if self.tok is None:  # the backend is parsed once per process (rust_tokenizer)
            self.tok = self.task.tokenizer.load()
        ids = self.tok.encode_documents([t for _, t, _ in self.batch], fast=True)
        for (domain, _, nbytes), doc_ids in zip(self.batch, ids, strict=True):
            st = self.stats[domain]
            st["sample_docs"] += 1
            st["sample_bytes"] += nbytes
            st["sample_tokens"] += len(doc_ids)
        self.batch, self.chars = [], 0


class _Columns:
    """Growing compact columns (8 bytes a value, not a Python object each)."""

    def __init__(self, **typecodes: str) -> None:
        self.cols = {k: array(t) for k, t in typecodes.items()}

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {prefix + k: np.frombuffer(v, dtype=v.typecode).copy() if len(v)
                else np.zeros(0, dtype=v.typecode) for k, v in self.cols.items()}


def index_file(task: IndexTask) -> dict[str, Any]:
    """Index one file; write its arrays, text spill and marker; return the marker's summary."""
    cpu0 = time.process_time()
    skipped: Counter = Counter()
    domains: list[str] = []
    cand = _Columns(line="q", domain="q", nbytes="q", priority="Q", kept="b", start="q")
    held = _Columns(line="q", domain="q", nbytes="q", priority="Q", start="q")
    untok = _Columns(domain="q", nbytes="q")
    path, text_path, marker = index_paths(task.work_dir, task.index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_text = text_path.with_name(text_path.name + ".tmp")
    with open(tmp_text, "wb") as spill:
        sample = _read(task, skipped, domains, cand, held, untok, spill)
    arrays = {**cand.arrays(), **held.arrays("held_")}
    stats = _counts(domains, arrays, untok.arrays(), sample)
    dom_dtype = domain_code_dtype(len(domains))
    arrays["domain"] = arrays["domain"].astype(dom_dtype)
    arrays["held_domain"] = arrays["held_domain"].astype(dom_dtype)
    arrays["kept"] = arrays["kept"].astype(bool)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp_text, text_path)
    os.replace(tmp, path)
    summary = {
        "index_hash": task.index_hash,
        "sample": SAMPLE_SETTINGS,
        "index": task.index,
        "file": task.rel,
        "domains": domains,  # codes used in the arrays
        "stats": stats,
        "skipped": dict(sorted(skipped.items())),
        "cpu_s": round(time.process_time() - cpu0, 4),
    }
    tmp_marker = marker.with_name(marker.name + ".tmp")
    tmp_marker.write_text(json.dumps(summary))
    os.replace(tmp_marker, marker)
    return summary


def _counts(domains: list[str], arrays: dict[str, np.ndarray], untok: dict[str, np.ndarray],
            sample: dict[str, Counter]) -> dict[str, dict[str, int]]:
    """Per-domain INDEX_KEYS counters, from the columns (nothing counted per document)."""
    n = len(domains)

    def count(codes: np.ndarray, weights: np.ndarray | None = None) -> list[int]:
        return np.bincount(codes, weights=weights, minlength=n).astype(np.int64).tolist()

    dom, nb, kept = arrays["domain"], arrays["nbytes"], arrays["kept"].astype(bool)
    cols = {
        "candidate_docs": count(dom), "candidate_bytes": count(dom, nb),
        "kept_docs": count(dom[kept]), "kept_bytes": count(dom[kept], nb[kept]),
        "untok_docs": count(untok["domain"]), "untok_bytes": count(untok["domain"], untok["nbytes"]),
        "heldout_docs": count(arrays["held_domain"]),
        "heldout_bytes": count(arrays["held_domain"], arrays["held_nbytes"]),
    }
    out = {}
    for c, d in enumerate(domains):
        st = {k: v[c] for k, v in cols.items()}
        st["docs"] = st["candidate_docs"] + st["untok_docs"]
        st["bytes"] = st["candidate_bytes"] + st["untok_bytes"]
        st.update({k: int(sample[d][k]) for k in ("sample_docs", "sample_bytes", "sample_tokens")})
        out[d] = {k: st[k] for k in INDEX_KEYS}
    return dict(sorted(out.items()))


def _read(
    task: IndexTask, skipped: Counter, domains: list[str], cand: _Columns, held: _Columns,
    untok: _Columns, spill: BinaryIO,
) -> dict[str, Counter]:
    """Read the file in order: candidate, held-out and never-eligible columns, the text
    spill; return the tokenized sample's counters per domain."""
    fields = Fields(text=task.text_field, domain=task.domain_field)
    code: dict[str, int] = {}
    samples: list[_Sample] = []
    counts: dict[str, Counter] = {}
    tokenized = _Tokenized(task, counts)
    room = task.long_threshold - task.tokenizer.specials_per_doc - 1
    seed, rel, keep, heldout = task.seed, task.rel, task.keep, task.heldout
    c_line, c_dom, c_nb, c_prio, c_kept, c_start = (cand.cols[k].append for k in (
        "line", "domain", "nbytes", "priority", "kept", "start"))
    u_dom, u_nb = untok.cols["domain"].append, untok.cols["nbytes"].append
    write = spill.write
    at = 0  # bytes written to the text spill
    for doc in iter_file(task.path, fields, skipped, task.strict):
        c = code.get(doc.domain)
        if c is None:
            c = code[doc.domain] = len(domains)
            domains.append(doc.domain)
            samples.append(_Sample())
            counts[doc.domain] = Counter()
        raw = doc.text.encode("utf-8", "surrogatepass")
        nbytes = len(raw)
        if heldout:
            hu, hprio = heldout_draw(task.heldout_seed, doc.text)
            if is_heldout(hu, heldout):
                for k, v in (("line", doc.index), ("domain", c), ("nbytes", nbytes),
                             ("priority", hprio), ("start", at)):
                    held.cols[k].append(v)
                write(raw)
                at += nbytes
                continue
        u, prio = doc_draws(seed, f"{rel}:{doc.index}")
        if u < SAMPLE_RATE:
            cut = doc.text[:SAMPLE_CHARS]
            tokenized.add(doc.domain, cut, len(cut.encode("utf-8", "surrogatepass")))
        else:
            samples[c].offer(u, doc.index, doc.text)
        kept = keeps_short(u, keep)
        # A token covers at least one byte (a SentencePiece dummy prefix may add one more),
        # so a document of fewer than threshold - specials - 1 bytes cannot be long.
        if nbytes < room and not kept:
            u_dom(c)
            u_nb(nbytes)
            continue
        c_line(doc.index)
        c_dom(c)
        c_nb(nbytes)
        c_prio(prio)
        c_kept(kept)
        c_start(at)
        write(raw)
        at += nbytes
    tokenized.flush()
    for d, smp in zip(domains, samples, strict=True):
        st = counts[d]
        for text, n in smp.topup(st["sample_docs"], st["sample_bytes"]):
            tokenized.add(d, text, n)
    tokenized.flush()
    return counts
