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

A task indexes one byte range of its file (:mod:`longctx.data.ranges`; the whole file unless
it is split), with the file's own line numbers. The marker keeps the range's top-up
candidates (the :class:`Reserve`, with their token counts), so :mod:`longctx.pack.parts` can
merge a split file's ranges into the very index and sample of the unsplit read.
"""

from __future__ import annotations

import heapq
import os
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from longctx.data.ranges import FileRange, iter_range
from longctx.data.readers import Fields, domain_code_dtype
from longctx.mix.heldout import heldout_draw, is_heldout
from longctx.mix.sampling import doc_draws, keeps_short
from longctx.pack.tok import TokenizerSpec
from longctx.stage import read_json_object, save_npz_atomic, write_json_atomic

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
    part: int = 0  # the range's position in the file (0: the first, or the whole file)
    start: int = 0  # the range (see FileRange): bytes, frames or row groups
    end: int | None = None
    lead: int = 0
    lines_before: int = 0  # lines of the file before the range

    @property
    def file_range(self) -> FileRange:
        return FileRange(Path(self.path), self.start, self.end, self.lead, self.lines_before)

    @property
    def range_key(self) -> list[Any]:
        """The range as the marker records it (a rerun split another way redoes it)."""
        return [self.start, self.end, self.lead, self.lines_before]


def unit_stem(work_dir: str | Path, index: int, part: int) -> Path:
    """Where a file's (range's) work files start: ``0000003`` or ``0000003.p0002``."""
    return Path(work_dir) / (f"{index:07d}" if part == 0 else f"{index:07d}.p{part:04d}")


def index_paths(work_dir: str | Path, index: int, part: int = 0) -> tuple[Path, Path, Path]:
    """(arrays, text spill, marker) of a file's (range's) index."""
    stem = unit_stem(work_dir, index, part)
    return (stem.with_name(stem.name + ".index.npz"), stem.with_name(stem.name + ".index.text"),
            stem.with_name(stem.name + ".index.done"))


def load_index_done(task: IndexTask) -> dict[str, Any] | None:
    """The summary of a finished index of this range with the same settings, if any."""
    arrays, text, marker = index_paths(task.work_dir, task.index, task.part)
    summary = read_json_object(marker)
    if (summary is None or summary.get("index_hash") != task.index_hash
            or summary.get("sample") != SAMPLE_SETTINGS or summary.get("range") != task.range_key
            or not arrays.is_file() or not text.is_file()):
        return None
    return summary


def load_index(work_dir: str | Path, index: int, part: int = 0) -> dict[str, np.ndarray]:
    """A file's (range's) index arrays: candidates (``line``, ``domain``, ``nbytes``,
    ``priority``, ``kept``, ``start``: byte offset of its text in the spill) and held-out
    documents (``held_line``, ``held_domain``, ``held_nbytes``, ``held_priority``,
    ``held_start``); domain codes index the summary's ``domains``."""
    with np.load(index_paths(work_dir, index, part)[0]) as z:
        return {k: z[k] for k in z.files}


class Reserve:
    """One domain's lowest draws above the sample rate that a top-up may still need: a draw
    is held while fewer than TOPUP_DOCS lower ones, of fewer than TOPUP_BYTES bytes, are.

    Which draws that keeps depends only on the set offered, not on its order, and the
    reserve of a file equals the reserve of its ranges' reserves put together: that is what
    lets split ranges give the unsplit sample."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, int, Any]] = []  # max-heap by draw: (-u, line, ...)
        self.nbytes = 0

    def wants(self, u: float) -> bool:
        """False when TOPUP_DOCS lower draws are held already: a top-up never reaches ``u``."""
        return len(self.heap) < TOPUP_DOCS or -self.heap[0][0] > u

    def add(self, u: float, line: int, nbytes: int, payload: Any) -> None:
        if not self.wants(u):
            return
        heapq.heappush(self.heap, (-u, line, nbytes, payload))
        self.nbytes += nbytes
        # drop the highest draw while the lower ones already reach a top-up limit
        while len(self.heap) > TOPUP_DOCS or (
            len(self.heap) > 1 and self.nbytes - self.heap[0][2] >= TOPUP_BYTES
        ):
            self.nbytes -= heapq.heappop(self.heap)[2]

    def entries(self) -> list[tuple[float, int, int, Any]]:
        """(u, line, bytes, payload), lowest draw first."""
        return sorted(((-u, line, n, p) for u, line, n, p in self.heap),
                      key=lambda r: (r[0], r[1]))


def topup(docs: int, nbytes: int, entries: list[tuple[float, int, int, Any]]) -> list[Any]:
    """Entries (lowest draw first) that top a rate sample of ``docs`` documents and
    ``nbytes`` bytes up to TOPUP_DOCS documents or TOPUP_BYTES bytes."""
    out = []
    for entry in entries:
        if docs >= TOPUP_DOCS or nbytes >= TOPUP_BYTES:
            break
        out.append(entry)
        docs += 1
        nbytes += entry[2]
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

    def _count(self, texts: list[str]) -> list[int]:
        if self.tok is None:  # the backend is parsed once per process (rust_tokenizer)
            self.tok = self.task.tokenizer.load()
        return self.tok.count_tokens(texts)

    def lengths(self, texts: list[str]) -> list[int]:
        """Tokens of each text (with BOS/EOS), counted nowhere (a reserve's top-up entries)."""
        out: list[int] = []
        for k in range(0, len(texts), TOPUP_DOCS):
            out += self._count(texts[k : k + TOPUP_DOCS])
        return out

    def flush(self) -> None:
        if not self.batch:
            return
        counts = self._count([t for _, t, _ in self.batch])
        for (domain, _, nbytes), n in zip(self.batch, counts, strict=True):
            st = self.stats[domain]
            st["sample_docs"] += 1
            st["sample_bytes"] += nbytes
            st["sample_tokens"] += n
        self.batch, self.chars = [], 0


class _Columns:
    """Growing compact columns (8 bytes a value, not a Python object each)."""

    def __init__(self, **typecodes: str) -> None:
        self.cols = {k: array(t) for k, t in typecodes.items()}

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {prefix + k: np.frombuffer(v, dtype=v.typecode).copy() if len(v)
                else np.zeros(0, dtype=v.typecode) for k, v in self.cols.items()}


def index_file(task: IndexTask) -> dict[str, Any]:
    """Index one file (range); write its arrays, text spill and marker; return the marker's
    summary: its stats as if the range were a whole file, plus its reserves (``topup``)."""
    cpu0 = time.process_time()
    skipped: Counter = Counter()
    domains: list[str] = []
    cand = _Columns(line="q", domain="q", nbytes="q", priority="Q", kept="b", start="q")
    held = _Columns(line="q", domain="q", nbytes="q", priority="Q", start="q")
    untok = _Columns(domain="q", nbytes="q")
    path, text_path, marker = index_paths(task.work_dir, task.index, task.part)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_text = text_path.with_name(text_path.name + ".tmp")
    with open(tmp_text, "wb") as spill:
        sample, reserves = _read(task, skipped, domains, cand, held, untok, spill)
    arrays = {**cand.arrays(), **held.arrays("held_")}
    stats = _counts(domains, arrays, untok.arrays(), sample)
    dom_dtype = domain_code_dtype(len(domains))
    arrays["domain"] = arrays["domain"].astype(dom_dtype)
    arrays["held_domain"] = arrays["held_domain"].astype(dom_dtype)
    arrays["kept"] = arrays["kept"].astype(bool)
    save_npz_atomic(path, arrays)
    os.replace(tmp_text, text_path)
    summary = {
        "index_hash": task.index_hash,
        "sample": SAMPLE_SETTINGS,
        "index": task.index,
        "part": task.part,
        "range": task.range_key,
        "file": task.rel,
        "domains": domains,  # codes used in the arrays
        "stats": stats,
        "topup": reserves,  # per domain: the rate sample's [docs, bytes, tokens], the reserve
        "skipped": dict(sorted(skipped.items())),
        "cpu_s": round(time.process_time() - cpu0, 4),
    }
    # last: a marker says the files above are whole
    write_json_atomic(marker, summary, default=None)
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
) -> tuple[dict[str, Counter], dict[str, Any]]:
    """Read the range in order: candidate, held-out and never-eligible columns, the text
    spill; return the tokenized sample's counters per domain and each domain's ``topup``
    (its rate sample's [docs, bytes, tokens], its reserve as [u, line, bytes, tokens])."""
    fields = Fields(text=task.text_field, domain=task.domain_field)
    code: dict[str, int] = {}
    samples: list[Reserve] = []
    counts: dict[str, Counter] = {}
    tokenized = _Tokenized(task, counts)
    room = task.long_threshold - task.tokenizer.specials_per_doc - 1
    seed, rel, keep, heldout = task.seed, task.rel, task.keep, task.heldout
    c_line, c_dom, c_nb, c_prio, c_kept, c_start = (cand.cols[k].append for k in (
        "line", "domain", "nbytes", "priority", "kept", "start"))
    u_dom, u_nb = untok.cols["domain"].append, untok.cols["nbytes"].append
    write = spill.write
    at = 0  # bytes written to the text spill
    for doc in iter_range(task.file_range, fields, skipped, task.strict):
        c = code.get(doc.domain)
        if c is None:
            c = code[doc.domain] = len(domains)
            domains.append(doc.domain)
            samples.append(Reserve())
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
        elif samples[c].wants(u):
            cut = doc.text[:SAMPLE_CHARS]
            samples[c].add(u, doc.index, len(cut.encode("utf-8", "surrogatepass")), cut)
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
    reserves: dict[str, Any] = {}
    for d, smp in zip(domains, samples, strict=True):
        st = counts[d]
        entries = smp.entries()
        if task.file_range.whole:  # no ranges to merge with: only the top-up needs tokens
            entries = topup(st["sample_docs"], st["sample_bytes"], entries)
        tokens = tokenized.lengths([cut for *_, cut in entries])
        reserve = [[u, line, n, t] for (u, line, n, _), t in zip(entries, tokens, strict=True)]
        reserves[d] = {"rate": [st["sample_docs"], st["sample_bytes"], st["sample_tokens"]],
                       "reserve": reserve}
        for _, _, n, t in topup(st["sample_docs"], st["sample_bytes"], reserve):
            st["sample_docs"] += 1
            st["sample_bytes"] += n
            st["sample_tokens"] += t
    return counts, dict(sorted(reserves.items()))
