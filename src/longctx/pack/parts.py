"""A big corpus file in ``data build``: its byte ranges, their line counts, and the merge of
their indexes into the file's.

A file larger than ``split_bytes`` is cut by :func:`longctx.data.ranges.split_ranges`
(uncompressed jsonl at line starts, multi-frame .zst at frames, parquet at row groups), so
several workers index (and later tokenize) one file. Document ids and draws use the file's
line numbers, so a range must know the lines before it: :func:`count_part` counts each range
but the last (a newline count; for .zst a decompression) as a task of its own, with a marker
like every other task. :func:`merge_parts` then puts the ranges' indexes together, in order,
into exactly what indexing the whole file gives: the same candidates in the same rows, the
same domain codes (order of first appearance), counters and tokenized sample.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from longctx.data.ranges import FileRange, count_lines, split_ranges, stops_file, with_line_numbers
from longctx.pack.index import (
    INDEX_KEYS,
    IndexTask,
    Reserve,
    load_index,
    topup,
    unit_stem,
)
from longctx.stage import read_json_object, write_json_atomic


def may_split(path: str, split_bytes: int) -> bool:
    """Whether a file is big enough to be cut (a stat; whether it can be is known later)."""
    try:
        return bool(split_bytes) and os.path.getsize(path) > split_bytes
    except OSError:
        return False


def file_ranges(task: IndexTask, split_bytes: int) -> list[FileRange]:
    """The ranges of a file's index task, in order (one, the whole file, when it is not cut);
    ``lines_before`` is known for the first only."""
    if not may_split(task.path, split_bytes):
        return [FileRange(Path(task.path), 0, None, 0, 0)]
    return split_ranges(task.path, split_bytes)


@dataclass(frozen=True)
class CountTask:
    """Count the lines of one range of a file (the ranges after it need the count)."""

    index: int
    part: int
    path: str
    start: int
    end: int | None
    lead: int
    work_dir: str
    index_hash: str

    @property
    def file_range(self) -> FileRange:
        return FileRange(Path(self.path), self.start, self.end, self.lead, None)

    @property
    def marker(self) -> Path:
        stem = unit_stem(self.work_dir, self.index, self.part)
        return stem.with_name(stem.name + ".lines")

    def record(self) -> list[Any]:
        return [self.index_hash, self.start, self.end, self.lead]


def count_tasks(task: IndexTask, ranges: list[FileRange]) -> list[CountTask]:
    """The count tasks of a file's ranges but the last (none for an uncut file)."""
    return [CountTask(task.index, k, task.path, r.start, r.end, r.lead, task.work_dir,
                      task.index_hash) for k, r in enumerate(ranges[:-1])]


def count_part(task: CountTask) -> dict[str, Any]:
    """Count the range's lines; write and return the marker."""
    summary = {"index": task.index, "part": task.part, "range": task.record(),
               "lines": count_lines(task.file_range)}
    write_json_atomic(task.marker, summary, default=None)
    return summary


def load_count_done(task: CountTask) -> dict[str, Any] | None:
    summary = read_json_object(task.marker)
    return summary if summary is not None and summary.get("range") == task.record() else None


def part_tasks(task: IndexTask, ranges: list[FileRange], counts: list[int]) -> list[IndexTask]:
    """The index tasks of a file's ranges (``counts``: lines of each range but the last)."""
    if len(ranges) == 1:
        return [task]
    numbered = with_line_numbers(ranges, [*counts, 0])
    return [replace(task, part=k, start=r.start, end=r.end, lead=r.lead,
                    lines_before=int(r.lines_before or 0)) for k, r in enumerate(numbered)]


@dataclass
class Part:
    """One range of an indexed file: where its rows sit among the file's."""

    part: int
    cand_first: int
    cand_count: int
    held_first: int
    held_count: int


@dataclass
class FileIndex:
    summary: dict[str, Any]  # as index_file gives for the whole file
    arrays: dict[str, np.ndarray]  # the file's candidates and held-out documents (no ``start``)
    parts: list[Part]  # the ranges read, in order (later ones dropped, see stops_file)


def merge_parts(work: str | Path, summaries: list[dict[str, Any]]) -> FileIndex:
    """The index of a file from its ranges' summaries (in order) and arrays. Ranges after one
    whose read ended on a broken stream are dropped, as the unsplit read stops there."""
    kept: list[dict[str, Any]] = []
    for s in summaries:
        kept.append(s)
        if stops_file(Counter(s["skipped"])):
            break
    domains: list[str] = []
    for s in kept:
        domains += [d for d in s["domains"] if d not in domains]
    code = {d: i for i, d in enumerate(domains)}
    cols: dict[str, list[np.ndarray]] = {}
    parts = []
    n_cand = n_held = 0
    for s in kept:
        a = load_index(work, s["index"], s["part"])
        remap = np.asarray([code[d] for d in s["domains"]] or [0], dtype=np.int64)
        for k, v in a.items():
            if k.endswith("start"):
                continue  # an offset into the range's own text spill
            cols.setdefault(k, []).append(remap[v] if k in ("domain", "held_domain") else v)
        parts.append(Part(s["part"], n_cand, len(a["line"]), n_held, len(a["held_line"])))
        n_cand += len(a["line"])
        n_held += len(a["held_line"])
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    summary = {
        "index": kept[0]["index"],
        "file": kept[0]["file"],
        "domains": domains,
        "stats": _merged_stats(kept, domains),
        "skipped": dict(sorted(sum((Counter(s["skipped"]) for s in kept), Counter()).items())),
        "cpu_s": round(sum(s["cpu_s"] for s in summaries), 4),
    }
    return FileIndex(summary, arrays, parts)


def _merged_stats(kept: list[dict[str, Any]], domains: list[str]) -> dict[str, dict[str, int]]:
    """Counters summed over the ranges; the sample is the ranges' rate samples plus the top-up
    the file's reserve (the reserve of theirs) gives."""
    out = {}
    for d in domains:
        st: Counter = Counter()
        rate = [0, 0, 0]
        reserve = Reserve()
        for s in kept:
            if d not in s["stats"]:
                continue
            st.update(s["stats"][d])
            t = s["topup"][d]
            rate = [a + b for a, b in zip(rate, t["rate"], strict=True)]
            for u, line, n, tokens in t["reserve"]:
                reserve.add(u, line, n, tokens)
        st["sample_docs"], st["sample_bytes"], st["sample_tokens"] = rate
        for _, _, n, tokens in topup(rate[0], rate[1], reserve.entries()):
            st["sample_docs"] += 1
            st["sample_bytes"] += n
            st["sample_tokens"] += tokens
        out[d] = {k: int(st[k]) for k in INDEX_KEYS}
    return dict(sorted(out.items()))
