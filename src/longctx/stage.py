"""Stage bookkeeping shared by every pipeline step: manifests, checksums, skip-when-done.

Each stage writes its outputs to one folder with a ``manifest.json`` that records what it
read, its config, counts, checksums and seconds. ``status: "done"`` plus a matching
``config_hash`` means a rerun can skip the stage. ``report`` reads these files only.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: Iterable[str | Path]) -> str:
    """One digest over several files (names and contents), order-independent by sorting names."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_hash(obj: Any) -> str:
    """Stable digest of a JSON-serialisable config."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def path_identity(path: str | Path | None) -> str | None:
    """A cheap fingerprint of a stage input (folder or file) for skip-when-done decisions.

    A finished stage folder is identified by its manifest (config hash and shard checksums);
    anything else by the names, sizes and modification times of its files. So rebuilding the
    data or retraining a model in the same place invalidates what was computed from it.
    None for what is not a path (e.g. the embedded model's name).
    """
    if not path:
        return None
    p = Path(path)
    if not p.exists():
        return None
    manifest = read_manifest(p) if p.is_dir() else None
    if manifest and manifest.get("status") == "done" and manifest.get("config_hash"):
        shards = [s.get("sha256") for s in manifest.get("shards") or []]
        return config_hash({"config_hash": manifest["config_hash"], "shards": shards})
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    return config_hash(
        [
            (
                str(q.relative_to(p)) if p.is_dir() else q.name,
                q.stat().st_size,
                q.stat().st_mtime_ns,
            )
            for q in files
        ]
    )


def run_hash(cfg: Any, inputs: Iterable[str] = ("model", "data", "eval_data", "haystack")) -> str:
    """Config hash of a stage run plus the identity of the inputs its config points at.

    ``cfg`` is a config dataclass; ``inputs`` names its fields that hold input paths (absent
    fields are ignored). Two runs with the same hash computed the same thing.
    """
    import dataclasses

    values = dataclasses.asdict(cfg)
    identities = {k: path_identity(values[k]) for k in inputs if k in values}
    return config_hash({"config": values, "inputs": identities})


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON via a temp file + rename so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    p = Path(folder) / MANIFEST
    if not p.is_file():
        return None
    with open(p) as f:
        return json.load(f)


def write_manifest(folder: str | Path, data: dict[str, Any]) -> Path:
    p = Path(folder) / MANIFEST
    write_json_atomic(p, data)
    return p


def is_done(folder: str | Path, cfg_hash: str | None = None) -> bool:
    """True when the folder holds a finished stage with the same config hash."""
    m = read_manifest(folder)
    if not m or m.get("status") != "done":
        return False
    return cfg_hash is None or m.get("config_hash") == cfg_hash


class Timer:
    """Wall and CPU seconds of a block (CPU includes children that were waited for)."""

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        self.c0 = _cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = _cpu_seconds() - self.c0


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
