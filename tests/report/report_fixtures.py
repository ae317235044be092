"""Hand-written stage outputs in the contract formats of COMMON.md ("Output contracts").

The report reads only these files, so fixtures written by hand test it independently of the
stages that normally produce them. Values are chosen so differences can be computed by hand.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

HOSTILE = '<script>alert("pwned")</script><img src="http://evil.example/x.png">'
DOMAINS = ["RedPajamaC4", "RedPajamaBook", "RedPajamaGithub"]


def tiny_png(color: str = "red") -> bytes:
    """A small real PNG as a stage would write it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    FigureCanvasAgg(fig)
    fig.add_subplot(1, 1, 1).plot([0, 1], [0, 1], color=color)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=30)
    return buf.getvalue()


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def stats_json() -> dict[str, Any]:
    pcts = {"p10": 10, "p25": 50, "p50": 300, "p75": 900, "p90": 5000, "p99": 9000, "max": 12000}
    return {
        "stage": "data.stats",
        "status": "done",
        "long_threshold": 4096,
        "sampled": False,
        "total_tokens": 1000,
        "domains": {
            "RedPajamaC4": {"docs": 10, "tokens": 500, "token_share": 0.5,
                            "long_token_fraction": 0.0, "chars_per_token": 4.1,
                            "length_percentiles": pcts},
            "RedPajamaBook": {"docs": 1, "tokens": 400, "token_share": 0.4,
                              "long_token_fraction": 1.0, "chars_per_token": 4.3,
                              "length_percentiles": pcts},
            "RedPajamaGithub": {"docs": 5, "tokens": 100, "token_share": 0.1,
                                "long_token_fraction": 0.2, "chars_per_token": 3.0,
                                "length_percentiles": pcts},
        },
    }


def build_manifest() -> dict[str, Any]:
    return {
        "stage": "data.build",
        "status": "done",
        "config": {"strategy": "per_source", "seq_len": 1024},
        "config_hash": "abc",
        "strategy": "per_source",
        "seq_len": 1024,
        "num_sequences": 2,
        "tokens_total": 2048,
        "domain_vocab": DOMAINS,
        "domains": {
            "RedPajamaC4": {"target_tokens": 1024, "tokens": 1024, "long_token_fraction": 0.0},
            "RedPajamaBook": {"target_tokens": 820, "tokens": 820, "long_token_fraction": 1.0},
            "RedPajamaGithub": {"target_tokens": 204, "tokens": 204, "long_token_fraction": 0.6},
        },
        "input": {
            "RedPajamaC4": {"docs": 10, "tokens": 500, "long_token_fraction": 0.0,
                            "estimated": False},
            "RedPajamaBook": {"docs": 1, "tokens": 400, "long_token_fraction": 1.0,
                              "estimated": True},
            "RedPajamaGithub": {"docs": 5, "tokens": 100, "long_token_fraction": 0.2,
                                "estimated": False},
        },
        "skipped": {"bad_json": 1},
        "shards": [{"path": "shard-00000.arrow", "rows": 2, "sha256": "0" * 64}],
        "tokenizer": {"name": "smollm2", "sha256": "f" * 64},
    }


def train_outputs(folder: Path, losses: list[float]) -> None:
    _write(folder / "manifest.json", {
        "stage": "train", "status": "done", "model": "smollm2-135m",
        "config": {"model": "smollm2-135m", "data": "data", "steps": len(losses),
                   "seq_len": 1024, "lr": 2e-5, "rope": {"rope_theta": 1000000.0,
                                                          "rope_type": "default"}},
        "config_hash": "def",
    })
    lines = [json.dumps({"step": i + 1, "loss": v, "lr": 2e-5, "tokens": 1024 * (i + 1),
                         "tokens_per_s": 100.0 + i}) for i, v in enumerate(losses)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def needle_json(model: str, scores: list[float], response: str = "7342118") -> dict[str, Any]:
    cells = []
    i = 0
    for length in (1024, 2048):
        for depth in (0, 50, 100):
            s = scores[i % len(scores)]
            cells.append({"length": length, "depth": depth, "score": s,
                          "scores": {"ruler": s, "paper_recall": s / 2},
                          "response": response if i else HOSTILE, "seconds": 1.5})
            i += 1
    return {
        "stage": "eval.needle", "status": "done", "model": model, "needle": "ruler",
        "headline": "ruler", "average": sum(c["score"] for c in cells) / len(cells),
        "trained_length": 1024, "cells": cells,
        "provenance": {"haystack_sha256": "1" * 64},
    }


def loss_json(model: str, values: dict[str, tuple[float | None, float | None]],
              positions: dict[str, float]) -> dict[str, Any]:
    buckets = ["0-4096", "4096-131072"]
    return {
        "stage": "eval.loss", "status": "done", "model": model, "buckets": buckets,
        "domains": {d: {buckets[0]: v[0], buckets[1]: v[1]} for d, v in values.items()},
        "overall": {buckets[0]: 2.0, buckets[1]: 1.5},
        "positions": positions,
        "tokens": {"total": 4096},
    }


BASE_LOSS = {"RedPajamaC4": (2.038, 1.560), "RedPajamaBook": (2.085, 1.852),
             "RedPajamaGithub": (0.907, 0.447)}
# Paper Table 5, "v.s. Per-source" row for these domains: C4 +.002/−.010, Book −.065/−.014,
# Github −.008/+.002; the fixture's second run is baseline + those differences.
PER_SOURCE_DIFF = {"RedPajamaC4": (0.002, -0.010), "RedPajamaBook": (-0.065, -0.014),
                   "RedPajamaGithub": (-0.008, 0.002)}


def make_run(root: Path, *, with_pngs: bool, loss_values: dict[str, tuple[float, float]],
             model: str = "smollm2-135m") -> Path:
    """A complete run directory: stats, build, train, needle before/after, loss, bookqa."""
    _write(root / "stats" / "stats.json", stats_json())
    _write(root / "stats" / "manifest.json", {"stage": "data.stats", "status": "done"})
    _write(root / "data" / "manifest.json", build_manifest())
    train_outputs(root / "train", [3.0, 2.8, 2.7, 2.65])
    _write(root / "needle-before" / "needle.json", needle_json(model, [1.0, 0.0, 1.0]))
    _write(root / "needle-after" / "needle.json", needle_json(model + "-trained", [1.0]))
    _write(root / "loss" / "loss.json",
           loss_json(model, loss_values, {"1024": 2.1, "4096": 1.9, "16384": 1.8}))
    _write(root / "bookqa" / "bookqa.json", {
        "stage": "eval.bookqa", "f1": 0.25, "n": 1,
        "items": [{"question": "Who?", "prediction": HOSTILE, "answers": ["Ann"], "f1": 0.25}],
    })
    if with_pngs:
        for sub, name in (("stats", "stats.png"), ("needle-before", "needle.png"),
                          ("needle-after", "needle.png"), ("loss", "loss.png")):
            (root / sub / name).write_bytes(tiny_png())
    # needle-before must sort before needle-after: stages finish in that order
    import os

    t = 1_700_000_000
    os.utime(root / "needle-before" / "needle.json", (t, t))
    os.utime(root / "needle-after" / "needle.json", (t + 10, t + 10))
    return root


def ruler_json(model: str, task_scores: dict[str, dict[str, float]],
               skipped: tuple[str, ...] = ()) -> dict[str, Any]:
    """A ruler.json with the given task x length scores (0..100); cells and averages follow."""
    lengths = sorted({int(n) for v in task_scores.values() for n in v})
    averages = {str(n): round(sum(v[str(n)] for v in task_scores.values()) / len(task_scores), 2)
                for n in lengths}
    cells = [{"task": t, "length": n, "index": 0, "score": v[str(n)] / 100,
              "response": HOSTILE if t == next(iter(task_scores)) else "7342118",
              "answers": ["7342118"], "input_tokens": n - 128, "seconds": 0.5}
             for t, v in task_scores.items() for n in lengths]
    return {
        "stage": "eval.ruler", "model": model, "tasks": list(task_scores), "lengths": lengths,
        "samples": 1, "task_scores": task_scores, "length_averages": averages,
        "average": round(sum(averages.values()) / len(averages), 2),
        "skipped": [{"task": t, "reason": f"{t} skipped: needs --squad FILE"} for t in skipped],
        "trained_length": 1024, "cells": cells, "provenance": {},
    }
