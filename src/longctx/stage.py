"""Stage bookkeeping shared by every pipeline step: manifests, checksums, skip-when-done,
and the output-folder contract.

Each stage writes its outputs to one folder with a ``manifest.json`` that records what it
read, its config, counts, checksums and seconds. ``status: "done"`` plus a matching
``config_hash`` means a rerun can skip the stage. ``report`` reads these files only.

What a stage trusts and checks (:func:`stage_output`, :func:`verified_file`):

- an output folder is claimed under an exclusive lock (a second run into it fails with one
  line naming the holder); a folder holding files longctx did not write is refused unless
  ``force``; an output may not be one of the stage's inputs, nor inside or around one;
- files named by a manifest must stay inside its folder, and their sha256 is verified
  before they are read (digests are cached by inode, size, mtime and ctime, so an unchanged
  file is hashed once);
- a finished stage folder is identified by its manifest's config hash and checksums; any
  other folder by the sha256 of its files; raw corpus files by size, mtime and ctime.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from longctx.errors import LongctxError

MANIFEST = "manifest.json"
LOCK = ".longctx.lock"
DIGEST_CACHE = "digests.json"


class StageError(LongctxError):
    """An output folder that cannot be used, or an input that fails its checks."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_hash(obj: Any) -> str:
    """Stable digest of a JSON-serialisable config."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_stat_key(path: str | Path) -> list[int]:
    """What identifies a file without reading it: inode, size, mtime and ctime (ns).

    ctime changes on every write and cannot be set by ``touch``, so a same-size edit that
    keeps the modification time still changes the key.
    """
    st = os.stat(path)
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _digest_cache_path() -> Path:
    root = os.environ.get("LONGCTX_CACHE") or Path.home() / ".cache" / "longctx"
    return Path(root) / DIGEST_CACHE


_DIGESTS: dict[str, Any] | None = None  # the on-disk cache, read once per process


def _digest_cache() -> dict[str, Any]:
    global _DIGESTS
    if _DIGESTS is None:
        try:
            data = json.loads(_digest_cache_path().read_text())
            _DIGESTS = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            _DIGESTS = {}
    return _DIGESTS


def file_digest(path: str | Path) -> str:
    """sha256 of a file, cached by (path, inode, size, mtime, ctime) so reruns do not rehash."""
    p = Path(path).resolve()
    key = [str(p), *file_stat_key(p)]
    cache = _digest_cache()
    hit = cache.get(str(p))
    if isinstance(hit, dict) and hit.get("key") == key and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    digest = sha256_file(p)
    if file_stat_key(p) == key[1:]:  # unchanged while hashing: safe to remember
        cache[str(p)] = {"key": key, "sha256": digest}
        while len(cache) > 20000:  # keep the cache small: drop the oldest entries
            cache.pop(next(iter(cache)))
        try:
            write_json_atomic(_digest_cache_path(), cache)
        except OSError:
            pass
    return digest


def confined_path(folder: str | Path, rel: Any, *, what: str = "path") -> Path:
    """``folder/rel`` for a name read from a manifest; refuses anything that leaves ``folder``.

    Absolute paths, ``..`` and symlinks pointing outside are rejected, so a manifest from
    someone else cannot make a stage read or delete files elsewhere.
    """
    base = Path(folder).resolve()
    if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "\0" in rel:
        raise StageError(f"{Path(folder) / MANIFEST}: {what} {rel!r} is not a relative file name")
    p = base / rel
    try:
        p.resolve().relative_to(base)
    except ValueError:
        raise StageError(
            f"{Path(folder) / MANIFEST}: {what} {rel!r} points outside {folder}"
        ) from None
    if ".." in Path(rel).parts:
        raise StageError(f"{Path(folder) / MANIFEST}: {what} {rel!r} points outside {folder}")
    return p


def verified_file(folder: str | Path, rel: Any, sha256: Any, *, what: str = "file") -> Path:
    """A manifest-listed file, confined to ``folder`` and checked against its recorded sha256."""
    p = confined_path(folder, rel, what=what)
    if not p.is_file():
        raise StageError(f"{what} listed in {Path(folder) / MANIFEST} is missing: {p}")
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise StageError(f"{Path(folder) / MANIFEST}: {what} {rel!r} has no sha256; rebuild it")
    actual = file_digest(p)
    if actual != sha256:
        raise StageError(
            f"{p}: sha256 {actual[:12]}… does not match {sha256[:12]}… recorded in "
            f"{Path(folder) / MANIFEST} (the file was changed after it was written; rebuild it)"
        )
    return p


def path_identity(path: str | Path | None) -> str | None:
    """A fingerprint of a stage input (folder or file) for skip-when-done and resume.

    A finished stage folder is identified by its manifest (config hash and the checksums it
    records); anything else (a model folder, a haystack) by the sha256 of its files. So
    rebuilding the data or retraining a model in the same place changes the identity.
    None for what is not a path (e.g. the embedded model's name).
    """
    if not path:
        return None
    p = Path(path)
    if not p.exists():
        return None
    manifest = read_manifest(p) if p.is_dir() else None
    if manifest and manifest.get("status") == "done" and manifest.get("config_hash"):
        shards = [s.get("sha256") for s in manifest.get("shards") or [] if isinstance(s, dict)]
        export = manifest.get("export") if isinstance(manifest.get("export"), dict) else {}
        return config_hash({"config_hash": manifest["config_hash"], "shards": shards,
                            "export": export.get("sha256")})
    files = [p] if p.is_file() else sorted(
        q for q in p.rglob("*") if q.is_file() and q.name != LOCK
    )
    return config_hash(
        [(str(q.relative_to(p)) if p.is_dir() else q.name, file_digest(q)) for q in files]
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


def write_json_atomic(path: str | Path, data: Any, *, default: Any = str) -> None:
    """Write JSON via a temp file + rename so readers never see a half-written file.

    ``default`` turns what JSON cannot hold into something it can (``str``: paths in
    manifests); None raises instead (work markers, whose values are read back as numbers)."""
    path = Path(path)
    text = json.dumps(data, indent=2, sort_keys=False, default=default) + "\n"  # may raise:
    path.parent.mkdir(parents=True, exist_ok=True)  # before any file exists
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def save_npz_atomic(path: str | Path, arrays: dict[str, Any]) -> None:
    """``np.savez`` via a temp file + rename, like :func:`write_json_atomic`."""
    import numpy as np

    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when it is missing, torn, not JSON or not an object.

    A manifest that cannot be read means "not done": the stage runs again.
    """
    return read_json_object(Path(folder) / MANIFEST)


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """A JSON object read from ``path``, or None when it is missing, torn, not JSON or not
    an object (a work file that cannot be read is work not done)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def manifest_bytes(folder: str | Path) -> bytes | None:
    """The manifest file's bytes (None when absent): a run that leaves them unchanged reused
    the stage's finished output."""
    try:
        return (Path(folder) / MANIFEST).read_bytes()
    except OSError:
        return None


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


def _holder_of(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text())
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


@contextlib.contextmanager
def stage_output(
    out: str | Path, stage: str, *, force: bool = False, inputs: Iterable[Any] = ()
) -> Iterator[Path]:
    """Claim ``out`` for one run of ``stage``: checks, then an exclusive lock while it runs.

    Refuses (one line each): ``out`` equal to, inside or around one of ``inputs``; a folder
    holding files longctx did not write, or another stage's output (``force`` takes it
    over; nothing already there is deleted by this function); a folder another run holds.
    The lock is an ``flock`` on ``out/.longctx.lock``, released by the kernel even when the
    process is killed, so a crashed run never blocks the next one.
    """
    import fcntl

    out = Path(out)
    resolved = out.resolve()
    for inp in inputs:
        if not inp or not isinstance(inp, (str, Path)) or not Path(inp).exists():
            continue
        if _overlaps(resolved, Path(inp).resolve()):
            raise StageError(
                f"--out {out} overlaps the input {inp}; write {stage} output to another folder"
            )
    if out.exists() and not out.is_dir():
        raise StageError(f"--out {out} is a file, not a folder")
    if out.is_dir() and not force:
        manifest_file = out / MANIFEST
        manifest = read_manifest(out)
        if manifest is not None and manifest.get("stage") not in (None, stage):
            raise StageError(
                f"--out {out} holds a {manifest.get('stage')!r} output, not {stage!r}; "
                f"choose another folder (or --force to take it over)"
            )
        foreign = [q.name for q in out.iterdir() if q.name != LOCK]
        if foreign and not manifest_file.exists():
            shown = ", ".join(sorted(foreign)[:3]) + (" …" if len(foreign) > 3 else "")
            raise StageError(
                f"--out {out} holds files longctx did not write ({shown}); choose an empty or "
                f"new folder, or pass --force to take it over"
            )
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StageError(
                f"--out {out} is in use by another longctx run ({_holder_of(lock)}); wait for "
                f"it to finish or choose another folder"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield out
    finally:
        os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def claimed_stage(
    out: str | Path, stage: str, cfg_hash: str, *, force: bool = False, inputs: Iterable[Any] = ()
) -> Iterator[Path]:
    """:func:`stage_output` plus a ``running`` manifest, so that a run killed before it wrote
    its final manifest leaves a folder that the rerun recognises as its own."""
    with stage_output(out, stage, force=force, inputs=inputs) as folder:
        write_manifest(folder, {"stage": stage, "status": "running", "config_hash": cfg_hash})
        yield folder


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
