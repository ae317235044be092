"""``ablation.json``: what each arm x seed measured, mean and spread per arm, verdicts.

A difference between two arms counts only when it is larger than the noise: the larger of
the two arms' seed spreads (max - min over seeds). With one seed per arm there is no spread,
so the noise falls back to bootstrap intervals over the held-out documents, and the verdict
says so: for losses the paired interval of the difference (every arm is scored on the same
documents; it counts when the interval excludes zero, ``longctx.intervals``), else, e.g. for
the needle average, the two arms' own intervals (it counts when they do not overlap:
|delta| > half-width A + half-width B). Without either, nothing is called a difference.
Everything here reads stage output files only; paths are stored relative to ``DIR`` so a
moved or re-made ablation compares equal.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

from longctx.ablate.config import AblationConfig

SEED_SPREAD, PAIRED, BOOTSTRAP, UNKNOWN = ("seed spread", "paired bootstrap 95%",
                                          "bootstrap 95%", "unknown")


# ------------------------------------------------------------------------------ reading


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _curve(path: Path) -> list[dict[str, Any]]:
    """The training loss curve without timings (those differ run to run)."""
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and "step" in r:
            rows.append({k: r.get(k) for k in ("step", "loss", "lr", "tokens", "grad_norm",
                                               "eval_loss") if r.get(k) is not None})
    return rows


def read_build(folder: Path) -> dict[str, Any]:
    m = _json(folder / "manifest.json") or {}
    domains = {d: {"tokens": v.get("tokens"), "share": v.get("share"),
                   "long_token_fraction": v.get("long_token_fraction"),
                   "target_share": v.get("target_share")}
               for d, v in (m.get("domains") or {}).items()}
    return {"strategy": m.get("strategy"), "tokens_total": m.get("tokens_total"),
            "seq_len": m.get("seq_len"), "long_token_fraction": m.get("long_token_fraction"),
            "domains": domains, "warnings": m.get("warnings") or [],
            "config_hash": m.get("config_hash")}


def read_train(folder: Path) -> dict[str, Any]:
    m = _json(folder / "manifest.json") or {}
    curve = _curve(folder / "metrics.jsonl")
    return {"steps": m.get("steps"), "tokens": m.get("tokens"), "seq_len": m.get("seq_len"),
            "rope_parameters": m.get("rope_parameters"),
            "final_loss": curve[-1]["loss"] if curve else None, "curve": curve}


def read_loss(folder: Path) -> dict[str, Any] | None:
    loss = _json(folder / "loss.json")
    if loss is None:
        return None
    return {"split": loss.get("split", "train"), "buckets": loss.get("buckets") or [],
            "domains": loss.get("domains") or {}, "overall": loss.get("overall") or {},
            "positions": loss.get("positions") or {},
            "interval95": loss.get("interval95") or {},
            "overall_interval95": loss.get("overall_interval95") or {},
            "positions_interval95": loss.get("positions_interval95") or {},
            "tokens": (loss.get("tokens") or {}).get("domains") or {}}


def read_needle(folder: Path) -> dict[str, Any] | None:
    n = _json(folder / "needle.json")
    if n is None:
        return None
    cells = [{"length": c.get("length"), "depth": c.get("depth"), "score": c.get("score")}
             for c in n.get("cells") or [] if isinstance(c, dict)]
    return {"needle": n.get("needle"), "headline": n.get("headline"),
            "average": n.get("average"), "average_interval95": n.get("average_interval95"),
            "trained_length": n.get("trained_length"), "cells": cells}


# ------------------------------------------------------------------------------ statistics


def describe(values: list[Any]) -> dict[str, Any]:
    """n, values, mean, spread (max - min) and sample std of the finite values."""
    xs = [float(v) for v in values if _finite(v)]
    if not xs:
        return {"n": 0, "values": [], "mean": None, "spread": None, "std": None}
    return {"n": len(xs), "values": xs, "mean": statistics.fmean(xs),
            "spread": max(xs) - min(xs), "std": statistics.stdev(xs) if len(xs) > 1 else None}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _half_width(interval: Any) -> float | None:
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(map(_finite, interval)):
        return abs(float(interval[1]) - float(interval[0])) / 2
    return None


def difference(base: dict[str, Any], other: dict[str, Any],
               paired: dict[str, Any] | None = None) -> dict[str, Any]:
    """other - base, the noise it must beat, and whether it does (``paired``: the result of
    ``intervals.paired_loss_difference`` for these two, used when seeds do not repeat)."""
    a, b = base.get("mean"), other.get("mean")
    if a is None or b is None:
        return {"delta": None, "noise": None, "noise_kind": UNKNOWN, "beyond": False}
    delta = b - a
    if base["n"] >= 2 and other["n"] >= 2:
        noise, kind = max(base["spread"], other["spread"]), SEED_SPREAD
    elif paired and _half_width(paired.get("interval95")) is not None:
        return {"delta": delta, "noise": _half_width(paired["interval95"]), "noise_kind": PAIRED,
                "interval95": paired["interval95"], "beyond": bool(paired["beyond_noise"])}
    else:
        ha, hb = _half_width(base.get("interval95")), _half_width(other.get("interval95"))
        noise, kind = (ha + hb, BOOTSTRAP) if ha is not None and hb is not None else (None, UNKNOWN)
    beyond = noise is not None and round(abs(delta), 12) > round(noise, 12)
    return {"delta": delta, "noise": noise, "noise_kind": kind, "beyond": beyond}


# ------------------------------------------------------------------------------ per arm


def _loss_stats(loss_recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per domain and bucket (and overall, and Loss@P) over seeds; one seed keeps its interval."""
    if not loss_recs:
        return {}
    buckets = list(loss_recs[0]["buckets"])
    domains = sorted({d for r in loss_recs for d in r["domains"]})
    one = len(loss_recs) == 1

    def stat(get: Any, interval: Any = None) -> dict[str, Any]:
        s = describe([get(r) for r in loss_recs])
        if one and interval is not None:
            s["interval95"] = interval
        return s

    def interval(r: dict[str, Any], d: str, b: str) -> Any:
        return (r["interval95"].get(d) or {}).get(b)

    out: dict[str, Any] = {"buckets": buckets, "domains": {}, "overall": {}, "positions": {}}
    for d in domains:
        out["domains"][d] = {
            b: stat(lambda r, d=d, b=b: (r["domains"].get(d) or {}).get(b),
                    interval(loss_recs[0], d, b))
            for b in buckets}
    for b in buckets:
        out["overall"][b] = stat(lambda r, b=b: r["overall"].get(b),
                                 loss_recs[0]["overall_interval95"].get(b))
    positions = sorted({p for r in loss_recs for p in r["positions"]}, key=_int_key)
    for p in positions:
        out["positions"][p] = stat(lambda r, p=p: r["positions"].get(p),
                                   loss_recs[0]["positions_interval95"].get(p))
    return out


def _int_key(x: Any) -> tuple[int, str]:
    s = str(x)
    return (int(s), s) if s.isdigit() else (1 << 62, s)


def _needle_stats(recs: list[dict[str, Any]]) -> dict[str, Any]:
    if not recs:
        return {}
    cells: dict[str, list[Any]] = {}
    for r in recs:
        for c in r["cells"]:
            cells.setdefault(f"{c['length']}:{c['depth']}", []).append(c["score"])
    average = describe([r["average"] for r in recs])
    if len(recs) == 1 and recs[0].get("average_interval95"):
        average["interval95"] = recs[0]["average_interval95"]
    return {"average": average,
            "cells": {k: describe(v) for k, v in cells.items()},
            "headline": recs[0].get("headline"), "needle": recs[0].get("needle")}


def _build_stats(recs: list[dict[str, Any]]) -> dict[str, Any]:
    domains = sorted({d for r in recs for d in r["domains"]})
    return {
        "long_token_fraction": describe([r["long_token_fraction"] for r in recs]),
        "domains": {d: {k: describe([(r["domains"].get(d) or {}).get(k) for r in recs])
                        for k in ("share", "long_token_fraction", "tokens")}
                    for d in domains},
    }


def _curve_mean(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_step: dict[int, list[float]] = {}
    for r in recs:
        for row in r["curve"]:
            if _finite(row.get("loss")):
                by_step.setdefault(int(row["step"]), []).append(float(row["loss"]))
    return [{"step": s, **{k: v for k, v in describe(xs).items() if k != "values"}}
            for s, xs in sorted(by_step.items())]


def arm_summary(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "build": _build_stats([s["build"] for s in seeds]),
        "train": {"final_loss": describe([s["train"]["final_loss"] for s in seeds]),
                  "curve": _curve_mean([s["train"] for s in seeds])},
        "loss": _loss_stats([s["loss"] for s in seeds if s.get("loss")]),
        "needle": _needle_stats([s["needle"] for s in seeds if s.get("needle")]),
    }


# ------------------------------------------------------------------------------ verdicts


def _signed(x: float) -> str:
    return f"{x:+.3f}".replace("-", "\u2212")


def _clause(what: str, diff: dict[str, Any], lower_is_better: bool) -> str:
    if diff["delta"] is None:
        return f"{what}: not measured"
    d = diff["delta"]
    if diff["noise_kind"] == UNKNOWN:
        return f"{what} {_signed(d)} (noise unknown: one seed, no interval): not judged"
    where = {SEED_SPREAD: "spread ", PAIRED: "one seed; paired bootstrap \u00b1"}.get(
        diff["noise_kind"], "one seed; bootstrap noise ")
    if not diff["beyond"]:
        word = "within noise"
    else:
        better = d < 0 if lower_is_better else d > 0
        word = "better beyond noise" if better else "worse beyond noise"
    return f"{what} {_signed(d)} ({where}{diff['noise']:.3f}): {word}"


def compare(base: dict[str, Any], other: dict[str, Any],
            paired: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every difference of ``other`` against ``base`` (Table 5 cells, overall, positions,
    needle); ``paired`` as :func:`paired_table` returns it (one seed per arm)."""
    bl, ol = base.get("loss") or {}, other.get("loss") or {}
    pd, po = (paired or {}).get("domains") or {}, (paired or {}).get("overall") or {}
    out: dict[str, Any] = {"domains": {}, "overall": {}, "positions": {}, "needle": None}
    for d, per in (bl.get("domains") or {}).items():
        out["domains"][d] = {b: difference(s, ((ol.get("domains") or {}).get(d) or {}).get(b)
                                           or {"mean": None}, (pd.get(d) or {}).get(b))
                             for b, s in per.items()}
    for b, s in (bl.get("overall") or {}).items():
        out["overall"][b] = difference(s, (ol.get("overall") or {}).get(b) or {"mean": None},
                                       po.get(b))
    for p, s in (bl.get("positions") or {}).items():
        out["positions"][p] = difference(s, (ol.get("positions") or {}).get(p) or {"mean": None})
    bn, on = base.get("needle") or {}, other.get("needle") or {}
    if bn and on:
        out["needle"] = difference(bn["average"], on["average"])
    return out


def paired_table(base_loss: dict[str, Any] | None,
                 other_loss: dict[str, Any] | None) -> dict[str, Any]:
    """Paired bootstrap intervals of other - base per domain and bucket, and overall, from
    two ``loss.json`` files scored on the same documents."""
    from longctx.intervals import paired_loss_difference

    if not base_loss or not other_loss:
        return {}
    buckets = list(base_loss.get("buckets") or [])
    return {
        "domains": {d: {b: paired_loss_difference(base_loss, other_loss, b, d) for b in buckets}
                    for d in base_loss.get("domains") or {}},
        "overall": {b: paired_loss_difference(base_loss, other_loss, b) for b in buckets},
    }


def verdict_line(name: str, base_name: str, diffs: dict[str, Any], differs: list[str]) -> str:
    clauses = [_clause(f"{b} loss", d, True) for b, d in diffs["overall"].items()]
    if diffs.get("needle"):
        clauses.append(_clause("needle", diffs["needle"], False))
    line = f"{name} vs {base_name}: " + "; ".join(clauses or ["nothing measured"])
    if differs:
        line += f" (also differs in {', '.join(differs)})"
    return line


# ------------------------------------------------------------------------------ the file


def _rel(path: Any, root: Path) -> Any:
    """A path relative to DIR when inside it (so moving DIR changes nothing)."""
    if not path:
        return path
    try:
        return os.path.relpath(Path(path).resolve(), root.resolve()) \
            if Path(path).resolve().is_relative_to(root.resolve()) else str(path)
    except (OSError, ValueError):
        return str(path)


def read_unit(root: Path, folder: Path, seed: int) -> dict[str, Any]:
    return {"seed": seed, "folder": _rel(folder, root),
            "build": read_build(folder / "data"), "train": read_train(folder / "train"),
            "loss": read_loss(folder / "loss"), "needle": read_needle(folder / "needle")}


def summarize(cfg: AblationConfig, units: list[Any], heldout: dict[str, Any],
              base_root: Path | None) -> dict[str, Any]:
    """The content of ``ablation.json``, read from the stage folders (timings are added by
    the caller)."""
    root = Path(cfg.out)
    arms: dict[str, Any] = {}
    for u in units:
        entry = arms.setdefault(u.arm.name, {"mixture": u.arm.mixture(),
                                             "differs": list(u.arm.differs), "seeds": []})
        entry["seeds"].append(read_unit(root, u.root, u.seed))
    held = {k: (_rel(v, root) if k in ("data", "scored") else v) for k, v in heldout.items()}
    paired = None
    if len(cfg.seed_list()) == 1:  # no seed spread: pair every arm with the first, per document
        raw = {u.arm.name: _json(u.root / "loss" / "loss.json") for u in units}
        first = units[0].arm.name
        paired = {name: paired_table(raw[first], raw[name]) for name in raw if name != first}
    result = assemble(arms, held, config=cfg.record(), seeds=cfg.seed_list(), paired=paired)
    if base_root is not None:
        result["base_model"] = {"loss": read_loss(base_root / "loss"),
                                "needle": read_needle(base_root / "needle")}
    return result


def assemble(arms: dict[str, Any], heldout: dict[str, Any], *, config: dict[str, Any],
             seeds: list[int], paired: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-arm summaries, comparisons against the first arm and verdicts, from the per-seed
    records in ``arms`` (``{name: {"mixture", "differs", "seeds": [read_unit(...)]}}``)."""
    for entry in arms.values():
        entry["summary"] = arm_summary(entry["seeds"])
    names = list(arms)
    verdicts, comparisons = [], {}
    for name in names[1:]:
        diffs = compare(arms[names[0]]["summary"], arms[name]["summary"],
                        (paired or {}).get(name))
        comparisons[name] = diffs
        verdicts.append(verdict_line(name, names[0], diffs, arms[name]["differs"]))
    warnings = []
    if heldout.get("split") != "heldout":
        warnings.append("loss measured on TRAINING rows of the first arm's first build "
                        f"({heldout.get('scored')}), not on held-out documents: the first arm "
                        "has seen them, so differences are biased toward it")
    for name, entry in arms.items():
        for s in entry["seeds"]:
            warnings += [f"{name} seed {s['seed']}: {w}" for w in s["build"]["warnings"]]
    return {
        "stage": "ablate",
        "format_version": 1,
        "config": config,
        "baseline": names[0],
        "seeds": seeds,
        "heldout": heldout,
        "noise_rule": ("a difference counts when |delta mean| exceeds the larger of the two "
                       "arms' seed spreads (max - min over seeds); with one seed, when its "
                       "paired bootstrap 95% interval over the held-out documents excludes "
                       "zero (losses) or the two arms' intervals do not overlap (needle)"),
        "arms": arms,
        "comparisons": comparisons,
        "verdicts": verdicts,
        "warnings": warnings,
    }
