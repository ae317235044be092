"""The embedded demo corpus: a SlimPajama-layout corpus made offline from Python's own files.

Every Python installation carries several kinds of text with very different lengths, which is
exactly what length upsampling needs to show an effect:

==================  ==============================================  ==================
domain              documents                                       length profile
==================  ==============================================  ==================
StdlibPackages      one stdlib package, all its modules concatenated  very long (book-like)
StdlibModules       one top-level stdlib module's source              long (code)
StdlibTests         one test file (absent on installs without test/)  long (code)
ReferenceManual     one ``pydoc_data.topics`` entry                   medium (prose)
ReleaseNotes        a NEWS release section, README, LICENSE section   medium (prose)
Docstrings          a module docstring, or a top-level function/class short (API prose)
                    with its methods' docstrings
==================  ==============================================  ==================

Records are ``{"text": ..., "meta": {"redpajama_set_name": DOMAIN, "source": PATH}}`` in
``train/chunk1/example_train_<i>.jsonl.zst`` like SlimPajama, globally shuffled with a fixed
seed (SlimPajama's files are pre-shuffled too). ``max_mb`` caps the text bytes: small domains
contribute everything they have and the rest is shared equally among the larger ones
(water-filling), so the mix is similar on every install. Asking for more than the install
holds repeats documents (counted as ``repeated_docs`` in the manifest). Output bytes depend
only on the Python version's files and the arguments: walks are sorted and nothing records
time.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import os
import random
import re
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longctx.errors import LongctxError

STAGE = "data.demo_corpus"
FORMAT_VERSION = 1

PACKAGES = "StdlibPackages"
MODULES = "StdlibModules"
TESTS = "StdlibTests"
REFERENCE = "ReferenceManual"
NOTES = "ReleaseNotes"
DOCSTRINGS = "Docstrings"
DOMAINS = (PACKAGES, MODULES, TESTS, REFERENCE, NOTES, DOCSTRINGS)

_TEST_DIRS = frozenset({"test", "tests", "idle_test"})
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "lib-dynload", "_bundled"})
_NOTE_SUFFIXES = (".txt", ".rst")
_NOTE_NAMES = ("README", "NEWS", "HISTORY", "CREDITS", "LICENSE", "TODO")


class DemoCorpusError(LongctxError):
    pass


@dataclass(frozen=True)
class Item:
    """One candidate document: its domain, a stable source id, its size and how to read it."""

    domain: str
    source: str
    nbytes: int
    load: Callable[[], str]


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _read_source(path: Path) -> str | None:
    """A source file's text, honouring PEP 263 coding cookies; None when it cannot be decoded."""
    import tokenize

    try:
        with tokenize.open(path) as f:
            text = f.read()
    except (SyntaxError, UnicodeDecodeError, OSError, LookupError):
        return None
    return text if text.strip() else None


def _walk(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``os.walk`` in sorted order, skipping caches, site-packages and hidden folders."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in _SKIP_DIRS and not d.startswith(".") and not d.startswith("config-")
        )
        yield Path(dirpath), dirnames, sorted(filenames)


def _is_test_path(rel: Path) -> bool:
    return any(part in _TEST_DIRS for part in rel.parts[:-1]) or (
        len(rel.parts) == 1 and rel.name.startswith("test_")
    )


def _file_item(domain: str, root: Path, path: Path) -> Item:
    rel = path.relative_to(root).as_posix()
    return Item(domain, f"stdlib/{rel}", path.stat().st_size, lambda: _read_source(path) or "")


def _package_item(root: Path, pkg: Path, files: list[Path]) -> Item:
    def load() -> str:
        parts = []
        for f in files:
            text = _read_source(f)
            if text:
                parts.append(f"# ---- {f.relative_to(root).as_posix()} ----\n{text}")
        return "\n".join(parts)

    size = sum(f.stat().st_size for f in files)
    return Item(PACKAGES, f"stdlib/{pkg.relative_to(root).as_posix()}/", size, load)


def _collect_code(root: Path) -> tuple[list[Item], list[Item], list[Item], list[Path]]:
    """(packages, modules, tests, every non-test source file) of the standard library."""
    modules: list[Item] = []
    tests: list[Item] = []
    package_files: dict[Path, list[Path]] = {}
    sources: list[Path] = []
    for dirpath, _, filenames in _walk(root):
        for name in filenames:
            if not name.endswith(".py"):
                continue
            path = dirpath / name
            rel = path.relative_to(root)
            if _is_test_path(rel):
                tests.append(_file_item(TESTS, root, path))
                continue
            sources.append(path)
            if len(rel.parts) == 1:
                modules.append(_file_item(MODULES, root, path))
            else:
                package_files.setdefault(root / rel.parts[0], []).append(path)
    packages = [
        _package_item(root, pkg, files)
        for pkg, files in sorted(package_files.items())
        if (pkg / "__init__.py").is_file()
    ]
    return packages, modules, tests, sources


def _collect_reference() -> list[Item]:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return []
    items = []
    for key in sorted(topics):
        text = topics[key].strip()
        if text:
            items.append(
                Item(REFERENCE, f"pydoc_data.topics/{key}", len(text.encode()), lambda t=text: t)
            )
    return items


_RELEASE_HEADING = re.compile(r"^(?=What's New in )", re.MULTILINE)


def _collect_notes(root: Path) -> list[Item]:
    """Plain-text files of the stdlib; NEWS files split into one document per release."""
    items = []
    for dirpath, _, filenames in _walk(root):
        for name in filenames:
            path = dirpath / name
            rel = path.relative_to(root)
            if _is_test_path(rel):
                continue
            if not (name.endswith(_NOTE_SUFFIXES) or name.startswith(_NOTE_NAMES)):
                continue
            if name.endswith((".py", ".pyc")):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            sections = _RELEASE_HEADING.split(text) if name.startswith("NEWS") else [text]
            for i, section in enumerate(s.strip() for s in sections):
                if len(section) < 200:
                    continue  # headings and stubs are not documents
                source = f"stdlib/{rel.as_posix()}#{i}"
                items.append(Item(NOTES, source, len(section.encode()), lambda t=section: t))
    return items


def _docstring_docs(module: str, source: str) -> list[tuple[str, str]]:
    """(qualified name, text) for the module docstring and each top-level function/class."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    out = []
    doc = ast.get_docstring(tree)
    if doc and doc.strip():
        out.append((module, f"Module {module}\n\n{doc.strip()}"))
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        parts = []
        doc = ast.get_docstring(node)
        kind = "class" if isinstance(node, ast.ClassDef) else "function"
        if doc and doc.strip():
            parts.append(doc.strip())
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    sdoc = ast.get_docstring(sub)
                    if sdoc and sdoc.strip():
                        parts.append(f"{node.name}.{sub.name}:\n{sdoc.strip()}")
        if parts:
            name = f"{module}.{node.name}"
            out.append((name, f"{kind.capitalize()} {name}\n\n" + "\n\n".join(parts)))
    return out


def _collect_docstrings(root: Path, sources: list[Path]) -> list[Item]:
    items = []
    for path in sources:
        text = _read_source(path)
        if not text:
            continue
        rel = path.relative_to(root).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        module = ".".join(parts)
        for name, doc in _docstring_docs(module, text):
            items.append(Item(DOCSTRINGS, f"docstring/{name}", len(doc.encode()), lambda d=doc: d))
    return items


def collect_pools(root: Path | None = None) -> dict[str, list[Item]]:
    """Every candidate document per domain, in a stable (sorted) order; empty domains dropped.

    Cached per process and folder (parsing every module for docstrings takes seconds).
    """
    return _collect_pools_cached(str(root or stdlib_dir()))


@functools.lru_cache(maxsize=4)
def _collect_pools_cached(root_str: str) -> dict[str, list[Item]]:
    root = Path(root_str)
    if not root.is_dir():
        raise DemoCorpusError(f"standard library folder not found: {root}")
    packages, modules, tests, sources = _collect_code(root)
    pools = {
        PACKAGES: packages,
        MODULES: modules,
        TESTS: tests,
        REFERENCE: _collect_reference(),
        NOTES: _collect_notes(root),
        DOCSTRINGS: _collect_docstrings(root, sources),
    }
    return {d: items for d, items in pools.items() if items}


def water_fill(pool_bytes: dict[str, int], budget: int) -> dict[str, int]:
    """Split ``budget`` bytes over domains: small pools give everything, large ones share equally.

    When the budget exceeds every pool together, each domain gets its pool scaled up by the
    same factor (documents then repeat).
    """
    total = sum(pool_bytes.values())
    if budget >= total:
        scale = budget / total if total else 0.0
        return {d: int(round(b * scale)) for d, b in pool_bytes.items()}
    out: dict[str, int] = {}
    remaining = budget
    order = sorted(pool_bytes, key=lambda d: (pool_bytes[d], d))
    for i, d in enumerate(order):
        share = remaining // (len(order) - i)
        take = min(pool_bytes[d], share)
        out[d] = take
        remaining -= take
    return {d: out[d] for d in pool_bytes}


def _select(items: list[Item], budget: int, seed: int, domain: str) -> list[tuple[Item, int]]:
    """(item, pass number) in a seeded order until ``budget`` bytes are reached.

    Whole documents only; a pool smaller than the budget is walked again in a new order.
    """
    chosen: list[tuple[Item, int]] = []
    got = 0
    passes = 0
    while got < budget and items:
        order = list(items)
        random.Random(f"{seed}:{domain}:{passes}").shuffle(order)
        for item in order:
            if got >= budget:
                break
            chosen.append((item, passes))
            got += item.nbytes
        passes += 1
    return chosen


def default_num_files(total_bytes: int) -> int:
    """About 4 MB of text per file, at least 4 files (the reader and workers see several)."""
    return max(4, math.ceil(total_bytes / 4e6))


def write_demo_corpus(
    out: str | Path,
    *,
    max_mb: float = 12.0,
    seed: int = 0,
    num_files: int | None = None,
    zstd_level: int = 3,
    root: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the demo corpus under ``out`` and return its manifest (also written to disk)."""
    from longctx.stage import claimed_stage, config_hash, is_done, read_manifest

    if max_mb <= 0:
        raise DemoCorpusError(f"--max-mb must be positive, got {max_mb}")
    out = Path(out)
    config = {
        "max_mb": max_mb,
        "seed": seed,
        "num_files": num_files,
        "zstd_level": zstd_level,
        "python": sys.version.split()[0],
        "format_version": FORMAT_VERSION,
    }
    chash = config_hash(config)
    if is_done(out, chash):
        return read_manifest(out) or {}
    with claimed_stage(out, STAGE, chash):
        return _write_corpus(out, root, config, chash, max_mb, seed, num_files, zstd_level)


def _write_corpus(out: Path, root: Path | None, config: dict[str, Any], chash: str,
                  max_mb: float, seed: int, num_files: int, zstd_level: int) -> dict[str, Any]:
    import zstandard

    from longctx.stage import Timer, sha256_file, write_manifest

    with Timer() as timer:
        pools = collect_pools(root)
        budgets = water_fill({d: sum(i.nbytes for i in items) for d, items in pools.items()},
                             int(max_mb * 1e6))
        records: list[tuple[str, str]] = []  # (domain, json line)
        domains: dict[str, dict[str, Any]] = {}
        for domain, items in pools.items():
            docs = nbytes = repeated = 0
            for item, passes in _select(items, budgets[domain], seed, domain):
                text = item.load()
                if not text.strip():
                    continue
                source = item.source if passes == 0 else f"{item.source}@repeat{passes}"
                line = json.dumps(
                    {"text": text, "meta": {"redpajama_set_name": domain, "source": source}},
                    ensure_ascii=False,
                )
                records.append((domain, line))
                docs += 1
                nbytes += len(text.encode())
                repeated += passes > 0
            domains[domain] = {
                "docs": docs,
                "bytes": nbytes,
                "repeated_docs": repeated,
                "pool_docs": len(items),
                "pool_bytes": sum(i.nbytes for i in items),
            }
        random.Random(seed).shuffle(records)
        total = sum(d["bytes"] for d in domains.values())
        n_files = num_files or default_num_files(total)
        n_files = max(1, min(n_files, len(records)))
        folder = out / "train" / "chunk1"
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("example_train_*.jsonl.zst"):
            stale.unlink()
        cctx = zstandard.ZstdCompressor(level=zstd_level)
        files = []
        bounds = [round(i * len(records) / n_files) for i in range(n_files + 1)]
        for i in range(n_files):
            chunk = records[bounds[i] : bounds[i + 1]]
            data = "".join(line + "\n" for _, line in chunk).encode("utf-8")
            path = folder / f"example_train_{i}.jsonl.zst"
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(cctx.compress(data))
            os.replace(tmp, path)
            files.append(
                {
                    "path": path.relative_to(out).as_posix(),
                    "docs": len(chunk),
                    "uncompressed_bytes": len(data),
                    "sha256": sha256_file(path),
                }
            )
    manifest = {
        "stage": STAGE,
        "status": "done",
        "config": config,
        "config_hash": chash,
        "docs": len(records),
        "text_bytes": total,
        "domains": domains,
        "files": files,
        "fields": {"text": "text", "domain": "meta.redpajama_set_name"},
        "seconds": round(timer.wall, 3),
    }
    write_manifest(out, manifest)
    return manifest
