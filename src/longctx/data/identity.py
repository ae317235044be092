"""How a stage recognises raw corpus files it has already read, without hashing them.

Hashing terabytes of text on every rerun is not cheap, so a raw file is identified by its
size, modification time and status-change time (all nanoseconds). Any write to a file's
content updates its ctime, and ``touch``/``os.utime`` can reset the mtime but never the
ctime, so a same-size edit that restores the mtime is still seen. Copying, moving or
``chmod``-ing a corpus also changes the ctime: a rerun then recomputes (a cost, never a
wrong reuse).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from longctx.stage import file_stat_key


def file_identity(path: str | os.PathLike) -> list[int]:
    """[size, mtime_ns, ctime_ns] of one file (follows symlinks: the content is what counts).

    The stat rule of :func:`longctx.stage.file_stat_key` (which the digest cache keys on)
    without the inode: what a raw file's identity records is its size and times.
    """
    return file_stat_key(path)[1:]


def files_identity(files: Sequence[Path], keys: Sequence[str]) -> list[list[object]]:
    """[key, size, mtime_ns, ctime_ns] per file, in the given order (keys are stable file ids)."""
    return [[k, *file_identity(f)] for f, k in zip(files, keys, strict=True)]
