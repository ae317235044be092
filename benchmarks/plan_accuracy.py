"""How close ``longctx plan``'s predictions are to measured GPU runs, and its calibration.

Reads every GPU results file of ``benchmarks/train_throughput.py`` under
``benchmarks/results/`` (``train_gpu*.json``), turns each measured case into a planner config
(arch, seq_len, checkpointing policy, offloads, CE, attention kind, master dtype) and prints,
per case, predicted vs measured peak memory (``max_memory_allocated``; the planner's fixed
2 GiB overhead is not in it) and tokens/s with the relative error, in-sample and
leave-one-out (each case predicted by constants fitted without it). Writes
``benchmarks/results/plan_accuracy.json``.

``--update`` also refits the constants and rewrites the package's
``src/longctx/train/calibration.json`` (the cases, with GPU, versions and config, and the fit).
Few cases are measured, so few constants are fitted: one activation-bytes factor (on the
cases whose peak is valid), one efficiency per attention kind and one width ``H0`` shared by
all (``longctx.train.plan.efficiency``).

A peak is invalid when the run did not reset it: records written before the benchmark
recorded ``peak_valid`` whose peak equals an earlier case's of the same file (the cases of a
group share a process) are kept for tokens/s but not used for memory.

    PYTHONPATH=src python benchmarks/plan_accuracy.py [--update] [--include OUT/results.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from longctx.train.archs import ARCHS  # noqa: E402
from longctx.train.memory import GiB  # noqa: E402
from longctx.train.plan import predict_run  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
CALIBRATION = REPO / "src" / "longctx" / "train" / "calibration.json"
SAME_PEAK_GIB = 0.05
H0_GRID = [float(h) for h in range(0, 4001, 4)]


# ----------------------------------------------------------------------------- cases
def run_config(rec: dict[str, Any]) -> dict[str, Any]:
    """The planner config of a benchmark record written before records carried their own
    (``plan_config``)."""
    ckpt = bool(rec.get("checkpointing"))
    return {
        "arch": rec["arch"],
        "seq_len": int(rec["seq_len"]),
        "micro_batch": 1,
        "gpus": 1,
        "policy": rec.get("checkpoint_policy", "full") if ckpt else "none",
        "activation_offload": bool(rec.get("activation_offload", False)),
        "cpu_offload": bool(rec.get("cpu_offload", False)),
        "ce_chunk": int(rec.get("ce_chunk", 4096)),
        "ce_impl": rec.get("ce_impl", "chunked"),
        "attention": rec.get("attention") or ("flex" if rec.get("doc_mask") else "sdpa"),
        "param_bytes": int(rec.get("param_bytes",
                                   2 if str(rec.get("mode", "")).startswith("bf16") else 4)),
        "compile": bool(rec.get("compile", False)),
    }


def peak_validity(recs: list[dict[str, Any]]) -> list[str | None]:
    """Per record: None when its peak is a measurement of that case, else why not."""
    out: list[str | None] = []
    earlier: list[tuple[str, float]] = []
    for r in recs:
        peak = r.get("peak_mem_gb")
        if peak is None:
            out.append("no peak recorded")
            continue
        if "peak_valid" in r:
            out.append(None if r["peak_valid"] else
                       f"memory still allocated at the case's start "
                       f"({r.get('mem_at_start_gb', '?')} GiB)")
        else:
            same = [n for n, p in earlier if abs(p - peak) <= SAME_PEAK_GIB]
            out.append(f"peak {peak:.2f} GiB equals earlier case {same[0]}'s in the same "
                       f"process: not reset per case" if same else None)
        earlier.append((r["name"], peak))
    return out


def measured_cases(extra: list[Path]) -> list[dict[str, Any]]:
    """Every GPU training case with a tokens/s measurement, from benchmarks/results/ and the
    ``extra`` results files."""
    cases = []
    for path in [*sorted(RESULTS.glob("train_gpu*.json")), *extra]:
        doc = json.loads(path.read_text())
        if doc.get("mode") != "gpu":
            continue
        env = doc.get("environment", {})
        recs = [r for r in doc.get("cases", []) if r.get("status") == "ok"
                and r.get("arch") in ARCHS and r.get("tokens_per_s")]
        for rec, invalid in zip(recs, peak_validity(recs), strict=True):
            cases.append({
                "name": rec["name"],
                "source": _shown(path),
                "gpu": rec.get("gpu") or env.get("gpu"),
                "torch": env.get("torch"),
                "transformers": env.get("transformers"),
                "config": rec.get("plan_config") or run_config(rec),
                "measured": {
                    "peak_mem_gib": rec.get("peak_mem_gb"),
                    "peak_valid": invalid is None,
                    "peak_invalid_reason": invalid,
                    "tokens_per_s": rec["tokens_per_s"],
                },
            })
    return cases


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


# ----------------------------------------------------------------------------- fit
def _memory_parts(case: dict[str, Any], fit: dict[str, Any]) -> tuple[float, float]:
    """(activation bytes at factor 1, everything else allocated) of a case."""
    pred = predict_run(case["config"], case["gpu"], {**fit, "activation_factor": 1.0})
    acts = pred.memory.activations
    return acts, pred.memory.allocated - acts


def fit_activation_factor(cases: list[dict[str, Any]], fit: dict[str, Any]) -> float | None:
    """Least squares in relative error over the valid peaks: (a A + B) / M close to 1."""
    num = den = 0.0
    for c in cases:
        if not c["measured"]["peak_valid"] or c["config"]["compile"]:
            continue
        m = c["measured"]["peak_mem_gib"] * GiB
        a, b = _memory_parts(c, fit)
        num += (a / m) * (1 - b / m)
        den += (a / m) ** 2
    return num / den if den else None


def _log_ratios(cases: list[dict[str, Any]], fit: dict[str, Any]) -> list[float]:
    return [math.log(predict_run(c["config"], c["gpu"], fit).tokens_per_s
                     / c["measured"]["tokens_per_s"]) for c in cases]


def fit_time(cases: list[dict[str, Any]], base: dict[str, Any]) -> dict[str, Any]:
    """Efficiency per attention kind and the shared width H0: for each H0 on a grid, each
    kind's efficiency is the geometric-mean ratio of measured to predicted tokens/s
    (compute-bound: tokens/s is proportional to it); keep the H0 of least squared log error."""
    timed = [c for c in cases if not c["config"]["compile"]]
    kinds = sorted({c["config"]["attention"] for c in timed})
    best: tuple[float, dict[str, Any]] | None = None
    for h0 in H0_GRID:
        fit = {**base, "width_half": h0, "efficiency": {k: 1.0 for k in kinds}}
        eff = {}
        for k in kinds:
            of_kind = [c for c in timed if c["config"]["attention"] == k]
            logs = _log_ratios(of_kind, fit)
            eff[k] = math.exp(-sum(logs) / len(logs))
        fit = {**fit, "efficiency": eff}
        err = sum(x * x for x in _log_ratios(timed, fit))
        if best is None or err < best[0]:
            best = (err, fit)
    assert best is not None
    return best[1]


def fit_all(cases: list[dict[str, Any]], start: dict[str, Any]) -> dict[str, Any]:
    """Time constants first (they do not depend on memory), then the activation factor."""
    fit = fit_time(cases, start)
    factor = fit_activation_factor(cases, fit)
    return {**fit, "activation_factor": factor if factor is not None
            else start["activation_factor"]}


# ----------------------------------------------------------------------------- report
def errors(case: dict[str, Any], fit: dict[str, Any]) -> dict[str, Any]:
    pred = predict_run(case["config"], case["gpu"], fit)
    m = case["measured"]
    out: dict[str, Any] = {
        "predicted_peak_gib": pred.memory.allocated / GiB,
        "predicted_total_gib": pred.memory.total / GiB,
        "predicted_tokens_per_s": pred.tokens_per_s,
        "tokens_per_s_error": pred.tokens_per_s / m["tokens_per_s"] - 1,
    }
    if m["peak_valid"]:
        out["peak_error"] = pred.memory.allocated / GiB / m["peak_mem_gib"] - 1
    return out


def leave_one_out(cases: list[dict[str, Any]], fit: dict[str, Any], i: int) -> dict[str, Any]:
    """Case ``i`` predicted by constants fitted on the others (a kind with no other case
    falls back to sdpa's efficiency, a memory factor with no other valid peak to the fit's)."""
    rest = cases[:i] + cases[i + 1:]
    sub = fit_all(rest, fit)
    kind = cases[i]["config"]["attention"]
    notes = []
    if kind not in sub["efficiency"]:
        notes.append(f"no other {kind} case: sdpa's efficiency")
    if fit_activation_factor(rest, sub) is None:
        notes.append("no other valid peak: the full fit's activation factor")
    return {**errors(cases[i], sub), "notes": notes}


def report(cases: list[dict[str, Any]], fit: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for i, c in enumerate(cases):
        rows.append({"name": c["name"], "gpu": c["gpu"], "config": c["config"],
                     "measured": c["measured"], "in_sample": errors(c, fit),
                     "leave_one_out": leave_one_out(cases, fit, i)})
    pct = lambda x: "      -" if x is None else f"{x * 100:+6.1f}%"  # noqa: E731
    print(f"{'case':28} {'peak GiB':>9} {'pred':>6} {'err':>7} {'LOO':>7}   "
          f"{'tok/s':>7} {'pred':>7} {'err':>7} {'LOO':>7}")
    for r in rows:
        m, s, loo = r["measured"], r["in_sample"], r["leave_one_out"]
        peak = f"{m['peak_mem_gib']:9.2f}" if m["peak_mem_gib"] is not None else "        -"
        print(f"{r['name']:28} {peak} {s['predicted_peak_gib']:6.1f} "
              f"{pct(s.get('peak_error'))} {pct(loo.get('peak_error'))}   "
              f"{m['tokens_per_s']:7.0f} {s['predicted_tokens_per_s']:7.0f} "
              f"{pct(s['tokens_per_s_error'])} {pct(loo['tokens_per_s_error'])}")
    for r in rows:
        if not r["measured"]["peak_valid"]:
            print(f"  {r['name']}: peak not used ({r['measured']['peak_invalid_reason']})")
        for note in r["leave_one_out"]["notes"]:
            print(f"  {r['name']} leave-one-out: {note}")
    worst = {
        key: max((abs(r[part][err]) for r in rows if err in r[part]), default=None)
        for key, part, err in (("peak_in_sample", "in_sample", "peak_error"),
                               ("peak_leave_one_out", "leave_one_out", "peak_error"),
                               ("tokens_per_s_in_sample", "in_sample", "tokens_per_s_error"),
                               ("tokens_per_s_leave_one_out", "leave_one_out",
                                "tokens_per_s_error"))}
    print("largest |error|: " + ", ".join(
        f"{k} {v * 100:.1f}%" for k, v in worst.items() if v is not None))
    print(f"fit: {json.dumps(fit)}")
    return {"fit": fit, "largest_abs_error": worst, "cases": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true",
                    help="refit and rewrite src/longctx/train/calibration.json")
    ap.add_argument("--include", type=Path, nargs="*", default=[],
                    help="more results.json files of train_throughput.py --gpu")
    ap.add_argument("--out", type=Path, default=RESULTS / "plan_accuracy.json",
                    help="where the comparison goes [benchmarks/results/plan_accuracy.json]")
    args = ap.parse_args()
    cases = measured_cases(args.include)
    current = json.loads(CALIBRATION.read_text()) if CALIBRATION.is_file() else None
    start = copy.deepcopy(current["fit"]) if current else {
        "activation_factor": 1.0, "efficiency": {"sdpa": 0.4}, "width_half": 0.0}
    fit = fit_all(cases, start) if args.update or current is None else current["fit"]
    if args.update:
        CALIBRATION.write_text(json.dumps({
            "about": "Constants of longctx plan and train's memory preflight, fitted by "
                     "benchmarks/plan_accuracy.py --update on the measured runs below "
                     "(peak_mem_gib: torch.cuda.max_memory_allocated; runs whose peak is "
                     "not valid are used for tokens/s only).",
            "fit": fit,
            "cases": cases,
        }, indent=2) + "\n")
        print(f"wrote {CALIBRATION.relative_to(REPO)}")
    summary = report(cases, fit)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {_shown(args.out)}")


if __name__ == "__main__":
    main()
