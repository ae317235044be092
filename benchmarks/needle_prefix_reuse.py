"""Needle grid with prefix KV-cache reuse vs per-cell prefill, side by side in one run.

Both sides are the product's own code: cells from ``CellBuilder``, ``greedy_generate`` with
the needle stage's stops. "Per cell" (``--no-prefix-reuse``) runs the grid in grid order and
prefills every prompt from scratch; "reuse" runs it in ``prefix_order`` and hands one
``PromptCache`` from cell to cell, so each prompt prefills only what it does not share with
the previous one. The two are interleaved cell by cell (alternating which goes first), so
both see the same machine load; wall and CPU seconds are taken per cell, the 1-minute load
average is sampled before every cell, and the responses are compared cell by cell.

Also written: the max abs difference of the last prompt token's logits, reuse vs fresh
prefill, on the cells up to ``--logit-check-max`` tokens; and a projection for the paper's
40 x 10 grid to 128K, from the grid's geometry (the same cells built with this tokenizer and
haystack): prompt tokens prefilled with and without reuse, and the FLOPs that means for
LLaMA-2-7B (linear layers per token plus causal attention per query-key pair).

    .venv/bin/python benchmarks/needle_prefix_reuse.py   # 1024,2048,4096 x 0..100 step 25
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
ESSAYS = REPO.parent / "shared" / "reference" / "needle_haystack" / "PaulGrahamEssays"
OUT = REPO / "benchmarks" / "results" / "needle_prefix_reuse.json"
QUIET_LOAD = 1.5
# LLaMA-2-7B: 32 layers, d_model 4096, MLP 11008; lm_head runs on the last position only
LLAMA2_7B = {"layers": 32, "d_model": 4096, "d_ff": 11008}


def load1() -> float:
    return os.getloadavg()[0]


def wait_quiet(max_wait_s: float) -> dict:
    """Poll the 1-minute load until it is under QUIET_LOAD or ``max_wait_s`` has passed."""
    t0 = time.time()
    seen = [load1()]
    while seen[-1] >= QUIET_LOAD and time.time() - t0 < max_wait_s:
        time.sleep(15)
        seen.append(load1())
    return {"waited_s": round(time.time() - t0, 1), "load1_at_start": round(seen[-1], 2),
            "quiet_at_start": seen[-1] < QUIET_LOAD}


def run_cell(model, tok, cfg, cell, prompts) -> dict:
    from longctx.eval.generate import first_line_done, greedy_generate

    before = prompts.reused_tokens if prompts else 0
    load = load1()
    w0, c0 = time.perf_counter(), time.process_time()
    new = greedy_generate(
        model,
        cell.ids,
        max_new_tokens=cfg.max_new_tokens,
        stop_ids=[i for i in (tok.eos_id,) if i is not None],
        decode=lambda ids: tok.decode(ids, skip_special_tokens=True),
        stop_text=first_line_done if cfg.stop_at_newline else None,
        prompt_cache=prompts,
    )
    return {
        "length": cell.length,
        "depth": cell.depth,
        "wall_s": round(time.perf_counter() - w0, 3),
        "cpu_s": round(time.process_time() - c0, 3),
        "load1": round(load, 2),
        "tokens_from_cache": (prompts.reused_tokens - before) if prompts else 0,
        "new_tokens": len(new),
        "response": tok.decode(new, skip_special_tokens=True).strip(),
    }


def side_by_side(model, tok, cfg, builder) -> dict:
    """Both ways over the grid, interleaved cell by cell."""
    from longctx.eval.generate import PromptCache
    from longctx.eval.needle import build_needle, prefix_order

    grid = [(L, d) for L in cfg.lengths for d in cfg.depths]
    orders = {"per_cell": grid, "reuse": prefix_order(cfg, builder, grid)}
    prompts = PromptCache()
    rows: dict[str, list[dict]] = {"per_cell": [], "reuse": []}
    for k in range(len(grid)):
        sides = ["per_cell", "reuse"] if k % 2 == 0 else ["reuse", "per_cell"]
        for side in sides:
            cell = build_needle(cfg, builder, *orders[side][k], 0)
            rows[side].append(run_cell(model, tok, cfg, cell, prompts if side == "reuse" else None))
    by_cell = {side: {(r["length"], r["depth"]): r for r in rows[side]} for side in rows}
    summary = {side: summarize(rows[side]) for side in rows}
    off, on = summary["per_cell"], summary["reuse"]
    loads = [r["load1"] for side in rows for r in rows[side]]
    return {
        "per_cell": off,
        "reuse": on,
        "ratio_wall": round(off["wall_s"] / on["wall_s"], 3),
        "ratio_cpu": round(off["cpu_s"] / on["cpu_s"], 3),
        "ratio_prefill_tokens": round(off["prefilled_tokens"] / on["prefilled_tokens"], 3),
        "same_responses": sum(
            by_cell["per_cell"][c]["response"] == by_cell["reuse"][c]["response"] for c in grid
        ),
        "cells": len(grid),
        "load1_during": {"min": min(loads), "max": max(loads),
                         "mean": round(sum(loads) / len(loads), 2)},
        "reuse_order": [list(c) for c in orders["reuse"]],
        "rows": [
            {"length": c[0], "depth": c[1],
             **{f"{side}_{k}": by_cell[side][c][k] for side in rows for k in ("wall_s", "cpu_s")},
             "tokens_from_cache": by_cell["reuse"][c]["tokens_from_cache"],
             "response": by_cell["per_cell"][c]["response"],
             "same_response": by_cell["per_cell"][c]["response"]
             == by_cell["reuse"][c]["response"]}
            for c in grid
        ],
    }


def summarize(rows: list[dict]) -> dict:
    prompt = sum(r["length"] for r in rows)
    cached = sum(r["tokens_from_cache"] for r in rows)
    return {
        "wall_s": round(sum(r["wall_s"] for r in rows), 2),
        "cpu_s": round(sum(r["cpu_s"] for r in rows), 2),
        "prompt_tokens": prompt,
        "tokens_from_cache": cached,
        "prefilled_tokens": prompt - cached,
        "new_tokens": sum(r["new_tokens"] for r in rows),
    }


def logit_check(model, cfg, builder, max_length: int) -> dict:
    """Last prompt token's logits: reuse (in prefix order) vs fresh prefill."""
    from longctx.eval.generate import PromptCache, prefill
    from longctx.eval.needle import build_needle, prefix_order

    cells = [(L, d) for L in cfg.lengths if L <= max_length for d in cfg.depths]
    prompts = PromptCache()
    worst, argmax_same = 0.0, 0
    for c in prefix_order(cfg, builder, cells):
        ids = build_needle(cfg, builder, *c, 0).ids
        got, _ = prefill(model, ids, prompt_cache=prompts)
        ref, _ = prefill(model, ids)
        worst = max(worst, float((got - ref).abs().max()))
        argmax_same += int(got.argmax()) == int(ref.argmax())
    return {"cells": len(cells), "max_length": max_length, "max_abs_logit_diff": worst,
            "same_argmax": argmax_same, "tokens_from_cache": prompts.reused_tokens}


def paper_grid_projection(tok, model_name: str, text: str) -> dict:
    """Tokens and LLaMA-2-7B FLOPs to prefill the paper's grid, per cell vs with reuse."""
    import numpy as np

    from longctx.eval.generate import common_prefix_length
    from longctx.eval.needle import (
        PAPER_DEPTHS,
        PAPER_LENGTHS,
        CellBuilder,
        NeedleConfig,
        build_needle,
        prefix_order,
    )

    cfg = NeedleConfig(paper_grid=True, needle="paper")
    cfg.validate()
    builder = CellBuilder(tok, text, max(PAPER_LENGTHS))
    m = LLAMA2_7B
    linear = 2 * m["layers"] * (4 * m["d_model"] ** 2 + 3 * m["d_model"] * m["d_ff"])
    per_pair = 4 * m["layers"] * m["d_model"]  # QK^T and AV, 2 FLOPs per multiply-add

    def pairs(start: int, end: int) -> int:  # query-key pairs of queries start..end-1
        return (end * (end + 1) - start * (start + 1)) // 2

    prev = np.zeros(0, np.int64)
    totals = {"per_cell": [0, 0], "reuse": [0, 0]}  # [tokens, pairs]
    for c in prefix_order(cfg, builder, [(L, d) for L in cfg.lengths for d in cfg.depths]):
        ids = np.asarray(build_needle(cfg, builder, *c, 0).ids)
        keep = min(common_prefix_length(prev, ids), ids.size - 1)
        for side, start in (("per_cell", 0), ("reuse", keep)):
            totals[side][0] += ids.size - start
            totals[side][1] += pairs(start, ids.size)
        prev = ids
    flops = {s: linear * t + per_pair * p for s, (t, p) in totals.items()}
    return {
        "grid": f"{len(PAPER_LENGTHS)} lengths {PAPER_LENGTHS[0]}..{PAPER_LENGTHS[-1]} x "
                f"{len(PAPER_DEPTHS)} depths {PAPER_DEPTHS}",
        "tokens_of": f"{model_name}'s tokenizer (the geometry, not LLaMA-2's exact ids)",
        "prefill_tokens": {s: t for s, (t, _) in totals.items()},
        "ratio_prefill_tokens": round(totals["per_cell"][0] / totals["reuse"][0], 3),
        "llama2_7b_prefill_pflops": {s: round(f / 1e15, 1) for s, f in flops.items()},
        "ratio_llama2_7b_prefill_flops": round(flops["per_cell"] / flops["reuse"], 3),
        "flops_rule": "2 x 6.48e9 linear FLOPs per prefilled token + 4 x 32 x 4096 per causal "
                      "query-key pair (decode and lm_head left out: the same on both sides)",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--lengths", default="1024,2048,4096")
    ap.add_argument("--depths", default="0,25,50,75,100")
    ap.add_argument("--needle", default="paper", choices=["paper", "ruler"])
    ap.add_argument("--haystack", default=str(ESSAYS) if ESSAYS.is_dir() else "")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    ap.add_argument("--wait-quiet", type=float, default=300,
                    help=f"seconds to wait for a 1-minute load under {QUIET_LOAD} first")
    ap.add_argument("--logit-check-max", type=int, default=2048,
                    help="logit comparison on cells up to this length (0 = skip)")
    ap.add_argument("--skip-projection", action="store_true")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()

    import torch
    import transformers

    from longctx.data.tokenizer import load_tokenizer
    from longctx.eval.generate import load_eval_model
    from longctx.eval.haystack import collapse_whitespace, load_haystack
    from longctx.eval.needle import CellBuilder, NeedleConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = NeedleConfig(lengths=[int(x) for x in args.lengths.split(",")],
                       depths=[int(x) for x in args.depths.split(",")], needle=args.needle)
    cfg.validate()
    hay = load_haystack(args.haystack or None)
    text = collapse_whitespace(hay.text) if args.needle == "ruler" else hay.text
    model, folder = load_eval_model(args.model, rope_theta=None, max_length=max(cfg.lengths))
    tok = load_tokenizer(folder)
    builder = CellBuilder(tok, text, max(cfg.lengths))
    result = {
        "benchmark": "needle_prefix_reuse",
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "cpus": os.cpu_count()},
        "model": args.model,
        "device": str(next(model.parameters()).device),
        "dtype": str(next(model.parameters()).dtype),
        "torch_threads": torch.get_num_threads(),
        "haystack": hay.source,
        "needle": args.needle,
        "lengths": cfg.lengths,
        "depths": cfg.depths,
        "samples": 1,
    }
    warm = NeedleConfig(lengths=[min(cfg.lengths)], depths=[0, 50], needle=args.needle)
    warm.validate()
    side_by_side(model, tok, warm, builder)  # allocator and kernels warm for both sides
    result["conditions"] = wait_quiet(args.wait_quiet)
    t0 = time.perf_counter()
    result["measured"] = side_by_side(model, tok, cfg, builder)
    result["conditions"]["load1_at_end"] = round(load1(), 2)
    result["conditions"]["quiet_throughout"] = (
        result["measured"]["load1_during"]["max"] < QUIET_LOAD
    )
    result["conditions"]["note"] = (
        "interleaved cell by cell, so both sides saw the same load; "
        + ("quiet (1-minute load < 1.5 before every cell)"
           if result["conditions"]["quiet_throughout"]
           else "under contention: other processes shared the cores, so the wall ratio is "
                "noisier than the CPU-seconds and token ratios")
    )
    result["measured_seconds"] = round(time.perf_counter() - t0, 1)
    if args.logit_check_max:
        result["logit_check"] = logit_check(model, cfg, builder, args.logit_check_max)
    if not args.skip_projection:
        result["paper_grid_projection"] = paper_grid_projection(tok, args.model, text)
    out = json.dumps(result, indent=2)
    print(out)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(out + "\n")


if __name__ == "__main__":
    main()
