"""The candidates of the files indexed, what the rounds learnt about them, and their tokens.

A file's spill is the concatenation of its (round, range) token spills in spill-key order: a
document's ``start`` is its offset in that concatenation, so a piece is read as (file, start,
length) whatever round or byte range tokenized it.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections import OrderedDict
from pathlib import Path

import numpy as np

from longctx.data.readers import domain_code_dtype
from longctx.errors import LongctxError
from longctx.mix.input_stats import NOT_ASKED, PROVEN_SHORT
from longctx.mix.select import Eligible
from longctx.mix.strategies import is_long
from longctx.pack.scan import load_meta, spill_paths


class SpillError(LongctxError):
    pass


_COLUMNS = {"file": np.int32, "row": np.int64, "line": np.int64, "domain": np.int64,
            "nbytes": np.int64, "priority": np.uint64, "kept": bool}


class _Table:
    """Columns of candidates (or held-out documents), appended file by file, plus what the
    rounds learnt: ``length`` (``NOT_ASKED``, ``PROVEN_SHORT``, or the real tokens) and
    ``start`` (-1: not spilled)."""

    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {k: [] for k in (*_COLUMNS, "length", "start")}
        self._cols: dict[str, np.ndarray] | None = None
        self.first: dict[int, int] = {}  # file -> its first position in the table
        self.count: dict[int, int] = {}  # file -> its entries

    def add(self, file: int, cols: dict[str, np.ndarray]) -> None:
        n = len(cols["line"])
        self.first[file] = len(self)
        self.count[file] = n
        for k, dtype in _COLUMNS.items():
            self._parts[k].append(np.full(n, file, dtype) if k == "file" else
                                  np.asarray(cols[k], dtype=dtype))
        self._parts["length"].append(np.full(n, NOT_ASKED, np.int64))
        self._parts["start"].append(np.full(n, -1, np.int64))
        self._cols = None

    @property
    def cols(self) -> dict[str, np.ndarray]:
        if self._cols is None:
            self._cols = {k: (np.concatenate(v) if v else np.zeros(0, _COLUMNS.get(k, np.int64)))
                          for k, v in self._parts.items()}
            self._parts = {k: [v] for k, v in self._cols.items()}
        return self._cols

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts["line"])

    def __getitem__(self, key: str) -> np.ndarray:
        return self.cols[key]


class Pool:
    """Every candidate and held-out document of the files indexed (domain codes: the order
    in which domains first appeared), and where the rounds spilled their tokens."""

    def __init__(self) -> None:
        self.cand = _Table()
        self.held = _Table()
        self.names: list[str] = []
        self._code: dict[str, int] = {}
        self.spilled: dict[int, list[tuple[int, int]]] = {}  # file -> [(round, start)]
        self._size: dict[int, int] = {}  # file -> tokens spilled so far
        self.rounds = 0

    def add_file(self, file: int, domains: list[str], arrays: dict[str, np.ndarray]) -> None:
        remap = np.asarray([self._code_of(d) for d in domains] or [0], dtype=np.int64)
        for table, pre in ((self.cand, ""), (self.held, "held_")):
            n = len(arrays[pre + "line"])
            table.add(file, {
                "row": np.arange(n), "line": arrays[pre + "line"],
                "domain": remap[arrays[pre + "domain"]] if n else np.zeros(0, np.int64),
                "nbytes": arrays[pre + "nbytes"], "priority": arrays[pre + "priority"],
                "kept": arrays["kept"] if not pre else np.ones(n, bool),
            })

    def _code_of(self, d: str) -> int:
        c = self._code.get(d)
        if c is None:
            c = self._code[d] = len(self.names)
            self.names.append(d)
        return c

    @property
    def tokenized(self) -> np.ndarray:
        return self.cand["length"] >= 0

    def tokenized_docs(self) -> dict[str, int]:
        """Candidates tokenized so far, per domain."""
        n = np.bincount(self.cand["domain"][self.tokenized], minlength=len(self.names))
        return {d: int(n[i]) for i, d in enumerate(self.names)}

    def proven_short_docs(self) -> dict[str, int]:
        """Candidates a round's token bound proved short without tokenizing, per domain."""
        n = np.bincount(self.cand["domain"][self.cand["length"] == PROVEN_SHORT],
                        minlength=len(self.names))
        return {d: int(n[i]) for i, d in enumerate(self.names)}

    def tokenized_tokens(self) -> dict[str, int]:
        """Tokens of the candidates tokenized so far, per domain (what pass 2 encoded)."""
        mask = self.tokenized
        n = np.bincount(self.cand["domain"][mask], weights=self.cand["length"][mask],
                        minlength=len(self.names))
        return {d: int(n[i]) for i, d in enumerate(self.names)}

    def record(self, work: Path, file: int, rnd: int, spilled: int) -> None:
        """What round ``rnd`` learnt about ``file`` (its metadata; ``spilled`` tokens in its
        spill), in round order."""
        meta = load_meta(work, file, rnd)
        at = self._size.get(file, 0)
        for table, pre in ((self.cand, ""), (self.held, "held_")):
            pos = table.first[file] + meta[pre + "row"]
            table["length"][pos] = meta[pre + "length"]
            start = meta[pre + "start"]
            table["start"][pos] = np.where(start >= 0, start + at, -1)
        self.spilled.setdefault(file, []).append((rnd, at))
        self._size[file] = at + spilled

    def eligible(self, vocab: list[str], threshold: int) -> Eligible:
        """The tokenized eligible candidates (kept, or long) as selection's table, with domain
        codes into ``vocab``."""
        c = self.cand
        pos = np.flatnonzero((c["length"] >= 0) & (c["kept"] | is_long(c["length"], threshold)))
        where = {d: i for i, d in enumerate(vocab)}
        code = np.asarray([where.get(d, -1) for d in self.names] or [0])
        dom_dtype = domain_code_dtype(len(vocab))
        return Eligible(
            file=c["file"][pos].astype(np.int32), row=c["row"][pos], line=c["line"][pos],
            start=c["start"][pos], domain=code[c["domain"][pos]].astype(dom_dtype),
            length=c["length"][pos], priority=c["priority"][pos],
        )


class SpillReader:
    """Read token ranges of the files' spills (a few open handles at a time)."""

    def __init__(self, work: Path, dtype: np.dtype, spilled: dict[int, list[tuple[int, int]]],
                 max_open: int = 64) -> None:
        self.work = work
        self.dtype = np.dtype(dtype)
        self.spilled = spilled
        self.max_open = max_open
        self._fds: OrderedDict[tuple[int, int], int] = OrderedDict()

    def read(self, file: int, start: int, length: int) -> np.ndarray:
        parts = self.spilled.get(file, [])
        k = bisect_right([s for _, s in parts], start) - 1
        if k < 0:
            raise SpillError(f"file #{file} has no spill at token {start}")
        rnd, first = parts[k]
        key = (file, rnd)
        fd = self._fds.get(key)
        if fd is None:
            fd = os.open(spill_paths(self.work, file, rnd)[0], os.O_RDONLY)
            self._fds[key] = fd
            if len(self._fds) > self.max_open:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(key)
        size = self.dtype.itemsize
        buf = os.pread(fd, length * size, (start - first) * size)
        if len(buf) != length * size:
            raise SpillError(f"spill of file #{file} is shorter than its metadata says")
        return np.frombuffer(buf, dtype=self.dtype)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


