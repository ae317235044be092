"""Find stage outputs under run directories by their files and manifests.

The report never imports stage code: it only knows the output contracts (file names and
``"stage"`` keys) written by ``data stats``, ``data build``, ``train`` and ``eval``. Each
RUN_DIR is walked recursively; every recognised output becomes one :class:`StageOutput`.
Files that cannot be read are not fatal: they are listed as warnings in the report.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longctx.errors import LongctxError
from longctx.plotting import finite

# Folders that hold checkpoints or model weights, never stage outputs the report needs.
_SKIP_DIRS = {"final", "checkpoints", "__pycache__", ".git"}


class ReportError(LongctxError):
    """Bad report input: a missing run directory or one with no stage outputs."""


@dataclass
class StageOutput:
    """One stage's output folder: the parsed JSON plus the stage's own PNG when present."""

    kind: str  # stats | build | train | needle | ruler | loss | bookqa | harness
    folder: Path
    data: dict[str, Any]
    label: str  # the folder relative to its run directory ("." for the run dir itself)
    png: Path | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)  # train only
    order: tuple[float, str] = (0.0, "")


@dataclass
class RunOutputs:
    """Everything found under one RUN_DIR, each kind in the order the stages finished."""

    root: Path
    name: str
    outputs: list[StageOutput] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[StageOutput]:
        return sorted((o for o in self.outputs if o.kind == kind), key=lambda o: o.order)


# stage name in the JSON -> (kind, the stage's own PNG file name)
_STAGE_FILES = {
    "stats.json": ("data.stats", "stats", "stats.png"),
    "needle.json": ("eval.needle", "needle", "needle.png"),
    "ruler.json": ("eval.ruler", "ruler", "ruler.png"),
    "loss.json": ("eval.loss", "loss", "loss.png"),
    "bookqa.json": ("eval.bookqa", "bookqa", None),
    "harness.json": ("eval.harness", "harness", None),
}


# What a torn, truncated, hand-edited or hostile JSON file raises while being parsed:
# JSONDecodeError/UnicodeDecodeError (ValueError), an int too long to convert (ValueError),
# nesting deeper than the parser's recursion limit (RecursionError), or an OS error.
_UNREADABLE = (OSError, ValueError, RecursionError)


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_metrics(path: Path, warnings: list[str]) -> list[dict[str, Any]]:
    """Parse metrics.jsonl; a torn line (a run still writing, or killed) is skipped, not fatal."""
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        warnings.append(f"{path}: unreadable ({e.__class__.__name__}: {e})")
        return rows
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except _UNREADABLE:
            warnings.append(f"{path}:{lineno}: not valid JSON, line skipped")
            continue
        step = row.get("step") if isinstance(row, dict) else None
        if isinstance(step, (int, float)) and not isinstance(step, bool):
            rows.append(row)
    return rows


def _short(e: BaseException, limit: int = 200) -> str:
    text = str(e).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"


def _finished_key(folder: Path, file: Path) -> tuple[float, str]:
    """Sort key: when the stage wrote its output (file mtime), then the path for stable ties."""
    try:
        mtime = file.stat().st_mtime
    except OSError:
        mtime = 0.0
    return (mtime, str(folder))


def _scan_folder(run: RunOutputs, folder: Path, files: set[str]) -> None:
    label = os.path.relpath(folder, run.root)
    seen_stats = False
    for fname, (stage, kind, png_name) in _STAGE_FILES.items():
        if fname not in files:
            continue
        path = folder / fname
        try:
            data = _read_json(path)
        except _UNREADABLE as e:
            run.warnings.append(f"{path}: unreadable ({e.__class__.__name__}: {_short(e)})")
            continue
        if not isinstance(data, dict):
            run.warnings.append(f"{path}: expected a JSON object")
            continue
        if data.get("stage") not in (stage, None):
            continue
        png = folder / png_name if png_name and png_name in files else None
        run.outputs.append(
            StageOutput(kind, folder, data, label, png, order=_finished_key(folder, path))
        )
        seen_stats = seen_stats or kind == "stats"
    if "manifest.json" not in files:
        return
    path = folder / "manifest.json"
    try:
        manifest = _read_json(path)
    except _UNREADABLE as e:
        run.warnings.append(f"{path}: unreadable ({e.__class__.__name__}: {_short(e)})")
        return
    if not isinstance(manifest, dict):
        run.warnings.append(f"{path}: expected a JSON object")
        return
    stage = manifest.get("stage")
    order = _finished_key(folder, path)
    if stage == "data.build":
        run.outputs.append(StageOutput("build", folder, manifest, label, order=order))
    elif stage == "train":
        metrics = read_metrics(folder / "metrics.jsonl", run.warnings)
        png = folder / "train.png" if "train.png" in files else None
        run.outputs.append(
            StageOutput("train", folder, manifest, label, png, metrics=metrics, order=order)
        )
    elif stage == "data.stats" and not seen_stats and "domains" in manifest:
        png = folder / "stats.png" if "stats.png" in files else None
        run.outputs.append(StageOutput("stats", folder, manifest, label, png, order=order))


def collect_run(root: str | Path) -> RunOutputs:
    """Walk one RUN_DIR (or a single stage folder) and parse every stage output in it."""
    root = Path(root)
    if not root.exists():
        raise ReportError(f"run directory not found: {root}")
    if not root.is_dir():
        raise ReportError(f"not a directory: {root}")
    run = RunOutputs(root=root, name=root.resolve().name or str(root))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        _scan_folder(run, Path(dirpath), set(filenames))
    return run


def collect(roots: list[str | Path]) -> list[RunOutputs]:
    """Collect several run directories; at least one output must exist across them."""
    if not roots:
        raise ReportError("give at least one RUN_DIR")
    runs = [collect_run(r) for r in roots]
    names = [r.name for r in runs]
    for run in runs:  # disambiguate runs that share a folder name
        if names.count(run.name) > 1:
            run.name = str(run.root)
    if not any(run.outputs for run in runs):
        where = ", ".join(str(r) for r in roots)
        raise ReportError(
            f"no stage outputs (stats.json, manifest.json, metrics.jsonl, needle.json, "
            f"ruler.json, loss.json, bookqa.json, harness.json) found under {where}"
        )
    return runs


def eval_records(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``train --eval-every`` evaluations of a run's metrics, malformed values as gaps:
    step, tokens, loss_by_bucket and key_loss_by_bucket (bucket -> finite loss; the latter
    None when key tokens were not evaluated), needle (grid average or None) and eval_s."""

    def losses(x: Any) -> dict[str, float]:
        if not isinstance(x, dict):
            return {}
        return {str(k): v for k, v in ((k, finite(v)) for k, v in x.items()) if v is not None}

    out = []
    for m in metrics:
        ev = m.get("eval")
        step = finite(m.get("step"))
        if not isinstance(ev, dict) or step is None:
            continue
        needle = ev.get("needle")
        tokens = finite(m.get("tokens"))
        out.append({
            "step": int(step),
            "tokens": int(tokens) if tokens is not None else None,
            "loss_by_bucket": losses(ev.get("loss_by_bucket")),
            "key_loss_by_bucket": losses(ev["key_loss_by_bucket"])
            if isinstance(ev.get("key_loss_by_bucket"), dict) else None,
            "needle": finite(needle.get("average")) if isinstance(needle, dict) else None,
            "eval_s": finite(ev.get("eval_s")),
        })
    return out
