"""Helpers of the data tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def write_lines(path: Path, lines: list[str | bytes], compress: str | None = None) -> Path:
    """Write raw lines (str or bytes) as jsonl, optionally gzip/zstd-compressed."""
    data = b"".join((ln.encode() if isinstance(ln, str) else ln) + b"\n" for ln in lines)
    if compress == "gz":
        data = gzip.compress(data, mtime=0)
    elif compress == "zst":
        import zstandard

        data = zstandard.ZstdCompressor(level=3).compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def record(text, domain="A", **extra) -> str:
    return json.dumps({"text": text, "meta": {"redpajama_set_name": domain}, **extra})
