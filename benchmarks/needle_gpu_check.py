"""GPU check of the eval stage at the paper's lengths (up to 128K), on a random-init model.

The device machine cannot receive the 540 MB SmolLM2 weights, so this builds a model of the
same architecture (SmolLM2-135M config, random weights, seed 0) there and checks what does
not depend on the weights:

1. one 128K needle cell: peak GPU memory and seconds for our greedy_generate (chunked
   prefill in 4K/16K chunks and in one pass) vs ``model.generate`` on the same ids;
2. chunked next-token losses (``token_losses``) equal transformers' own loss on a 32K row;
3. ``run_needle`` over 8K/32K/128K x depths 0/50/100 with a RoPE-base override (skipped if
   matplotlib is missing there);
4. the needle benchmark (benchmarks/needle_eval.py) at 8K/32K/128K.

    python benchmarks/needle_gpu_check.py --carry runs/eval_gpu_carry/smollm2 --out $OUT
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_random_model(carry: Path, dest: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(str(carry))
    model = AutoModelForCausalLM.from_config(config)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dest))
    for f in carry.iterdir():
        if f.name != "config.json":
            shutil.copy(f, dest / f.name)
    return dest


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else 0.0


def check_long_cell(model_dir: Path, report: dict, long: int, loss_len: int) -> None:
    import torch

    from longctx.data.tokenizer import load_tokenizer
    from longctx.eval.generate import greedy_generate, load_eval_model
    from longctx.eval.haystack import default_haystack
    from longctx.eval.needle import CellBuilder, make_instance

    model, folder = load_eval_model(str(model_dir), rope_theta=None, max_length=long)
    device = next(model.parameters()).device
    tok = load_tokenizer(folder)
    builder = CellBuilder(tok, default_haystack().text, max(long, loss_len))
    cell = builder.build(long, 50, make_instance("ruler", 0, long, 50))
    out = {"prompt_tokens": len(cell.ids)}
    for chunk in (4096, 16384, long):
        _sync()
        _reset_peak()
        t0 = time.perf_counter()
        new = greedy_generate(model, cell.ids, max_new_tokens=16, prefill_chunk=chunk)
        _sync()
        out[f"ours_chunk_{chunk}"] = {
            "seconds": round(time.perf_counter() - t0, 3),
            "peak_gib": _peak_gib(),
            "new_tokens": len(new),
        }
    x = torch.tensor([cell.ids], device=device)
    _reset_peak()
    t0 = time.perf_counter()
    with torch.inference_mode():
        ref = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=16,
            min_new_tokens=16,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )
    _sync()
    out["hf_generate"] = {"seconds": round(time.perf_counter() - t0, 3), "peak_gib": _peak_gib()}
    ours = greedy_generate(model, cell.ids, max_new_tokens=16, prefill_chunk=16384)
    out["same_tokens_as_generate"] = ours == ref[0, len(cell.ids) :].tolist()
    report["long_cell"] = out

    # chunked token losses vs transformers' loss on a 32K sequence
    from longctx.eval.loss import token_losses

    ids = builder.ids[:loss_len]
    ours_loss = token_losses(model, ids, chunk=1024)
    with torch.inference_mode():
        t = torch.as_tensor(ids, device=device)[None]
        ref_loss = model(input_ids=t, labels=t, use_cache=False).loss.float().item()
    report["loss_long_row"] = {
        "tokens": int(len(ids)),
        "ours_mean": float(ours_loss.mean()),
        "hf_loss": ref_loss,
        "abs_diff": abs(float(ours_loss.mean()) - ref_loss),
    }
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_run_needle(model_dir: Path, out_dir: Path, report: dict, grid: list[int]) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        report["run_needle"] = "skipped: matplotlib not installed on this machine"
        return
    from longctx.eval.needle import NeedleConfig, run_needle

    cfg = NeedleConfig(
        model=str(model_dir),
        lengths=grid,
        depths=[0, 50, 100],
        needle="ruler",
        rope_theta=2_000_000.0,
        trained_length=grid[len(grid) // 2],
        max_new_tokens=8,
        prefill_chunk=0,
    )
    cfg.validate()
    t0 = time.perf_counter()
    result = run_needle(cfg, out_dir / "needle", progress=False)
    report["run_needle"] = {
        "seconds": round(time.perf_counter() - t0, 2),
        "cells": len(result["cells"]),
        "average": result["average"],
        "cell_seconds": [round(c["seconds"], 3) for c in result["cells"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--carry", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/longctx_gpu_check")
    ap.add_argument("--long", type=int, default=131072)
    ap.add_argument("--loss-len", type=int, default=32768)
    ap.add_argument("--grid", default="8192,32768,131072")
    ap.add_argument("--bench-timeout", type=int, default=420)
    ap.add_argument("--only-bench", action="store_true", help="skip checks 1-3")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch
    import transformers

    report: dict = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": sys.version.split()[0],
    }
    t0 = time.perf_counter()
    model_dir = build_random_model(Path(args.carry), Path(args.work) / "rand135m")
    report["build_model_s"] = round(time.perf_counter() - t0, 2)
    grid = [int(x) for x in args.grid.split(",")]
    steps = [
        ("long_cell", lambda: check_long_cell(model_dir, report, args.long, args.loss_len)),
        ("run_needle", lambda: check_run_needle(model_dir, Path(args.work), report, grid)),
    ]
    for name, fn in [] if args.only_bench else steps:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            report[f"{name}_error"] = f"{type(e).__name__}: {e}"
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    try:
        bench = subprocess.run(
            [
                sys.executable,
                "benchmarks/needle_eval.py",
                "--model",
                str(model_dir),
                "--lengths",
                args.grid,
                "--depths",
                "0,50,100",
                "--haystack",
                "",
                "--new-tokens",
                "16",
                "--prefill-chunk",
                "0",
                "--out",
                str(out / "bench_gpu.json"),
            ],
            capture_output=True,
            text=True,
            timeout=args.bench_timeout,
        )
    except subprocess.TimeoutExpired:
        report["bench_error"] = f"timed out after {args.bench_timeout} s"
        bench = None
    report["bench_rc"] = bench.returncode if bench else None
    if bench and bench.returncode:
        report["bench_stderr"] = bench.stderr[-3000:]
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
