"""RULER's niah_single_1 and niah_single_2 with the embedded SmolLM2-135M at 1K and 2K tokens,
20 samples per (task, length): the issue's bar is an average >= 80 (RULER's 0..100 scale).

Not a test (80 cells take ~10 CPU-minutes); ``tests/eval/test_ruler_run.py`` runs 5 samples.
Needs RULER's essay haystack (``--haystack``; default: ../shared/reference's copy).

    python benchmarks/ruler_smollm.py [--haystack FILE] [--json benchmarks/results/ruler_smollm.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

DEFAULT_HAYSTACK = Path(__file__).resolve().parents[1].parent / "shared/reference/ruler/PaulGrahamEssays.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--haystack", default=str(DEFAULT_HAYSTACK))
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--json", default="benchmarks/results/ruler_smollm.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from longctx.eval.ruler.run import RulerConfig, run_ruler

    cfg = RulerConfig(lengths=[1024, 2048], tasks=["niah_single_1", "niah_single_2"],
                      samples=args.samples, haystack=args.haystack)
    cfg.validate()
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_ruler(cfg, Path(tmp) / "ruler", progress=False)
    out = {
        "model": "smollm2-135m (embedded)", "tasks": cfg.tasks, "lengths": cfg.lengths,
        "samples": cfg.samples, "task_scores": result["task_scores"],
        "length_averages": result["length_averages"], "average": result["average"],
        "bar": 80, "passes": result["average"] >= 80,
        "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
        "cpu_count": os.cpu_count(), "load_avg_1m_at_end": os.getloadavg()[0],
        "python": platform.python_version(),
    }
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
