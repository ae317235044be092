"""Access to the per-file scan spills: eligible-document metadata and token ranges."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from longctx.data.readers import domain_code_dtype
from longctx.errors import LongctxError
from longctx.mix.select import Eligible
from longctx.pack.scan import meta_path, tokens_path


class SpillError(LongctxError):
    pass


class SpillReader:
    """Read token ranges from the per-file spill files (a few open handles at a time)."""

    def __init__(self, work: Path, dtype: np.dtype, max_open: int = 64) -> None:
        self.work = work
        self.dtype = np.dtype(dtype)
        self.max_open = max_open
        self._fds: OrderedDict[int, int] = OrderedDict()

    def read(self, file: int, start: int, length: int) -> np.ndarray:
        fd = self._fds.get(file)
        if fd is None:
            fd = os.open(tokens_path(self.work, file), os.O_RDONLY)
            self._fds[file] = fd
            if len(self._fds) > self.max_open:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(file)
        size = self.dtype.itemsize
        buf = os.pread(fd, length * size, start * size)
        if len(buf) != length * size:
            raise SpillError(f"spill of file #{file} is shorter than its metadata says")
        return np.frombuffer(buf, dtype=self.dtype)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def load_eligible(
    work: Path, summaries: list[dict[str, Any]], pools: list[set[str]], vocab: list[str]
) -> Eligible:
    """Eligible docs of the files read, each file contributing only its ``pools`` domains.

    Domain codes are sized to the vocabulary (int16, int32 past 32,768 domains); the pool
    test goes through each file's own domains, so it costs nothing per vocabulary entry.
    """
    code = {d: i for i, d in enumerate(vocab)}
    dom_dtype = domain_code_dtype(len(vocab))
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("file", "row", "line", "start", "domain", "length", "priority")}
    for pos, s in enumerate(summaries):
        with np.load(meta_path(work, s["index"])) as m:
            local = s["domains"]
            remap = np.asarray([code[d] for d in local] or [0], dtype=dom_dtype)
            in_pool = np.asarray([d in pools[pos] for d in local] or [False])
            length = m["length"]
            keep = in_pool[m["domain"]] if len(length) else np.zeros(0, bool)
            domain = remap[m["domain"][keep]] if len(length) else np.empty(0, dom_dtype)
            n = int(keep.sum())
            cols["file"].append(np.full(n, s["index"], dtype=np.int32))
            cols["row"].append(np.flatnonzero(keep).astype(np.int64))
            cols["line"].append(m["line"][keep])
            cols["start"].append((np.cumsum(length) - length)[keep])
            cols["domain"].append(domain)
            cols["length"].append(length[keep])
            cols["priority"].append(m["priority"][keep])
    dtypes = {"file": np.int32, "row": np.int64, "line": np.int64, "start": np.int64,
              "domain": dom_dtype, "length": np.int64, "priority": np.uint64}
    return Eligible(**{
        k: (np.concatenate(v).astype(dtypes[k]) if v else np.empty(0, dtypes[k]))
        for k, v in cols.items()
    })
