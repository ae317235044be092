"""Needle grid speed: token-slice cells + cached greedy decoding vs the paper's way.

Baseline ("naive", the paper's eval/needle script as described in FACTS.md §4): for every
cell, encode the whole haystack, cut to the context length, decode, re-encode, trim by the
200-token buffer, move the insertion point left to a period, insert the needle ids, decode
to text, format the prompt, tokenize it again and call ``model.generate`` (greedy,
max_new_tokens=50, stops at EOS).

Ours: the haystack is tokenized once for the whole grid, each cell is built from id slices
(``CellBuilder``) and decoded with ``greedy_generate`` (one-pass prefill, last-position
logits, stop at EOS or at the end of the first answer line, max_new_tokens=32).

Three measurements, same model, haystack and grid, in one process, the two ways
interleaved cell by cell (alternating which goes first) so both see the same machine load;
ours is charged its one-time haystack tokenization:

1. ``build``: prompt construction only (no model): naive per-cell re-tokenization vs one
   tokenization + slices. This is the part of the work the design changes.
2. ``fixed``: end to end with an identical decoding budget (exactly ``--new-tokens`` new
   tokens on both sides: EOS suppressed in ``generate`` via min_new_tokens, no stops in
   ours), so only construction and the decoding loop differ.
3. ``default``: each side with its own defaults (the paper's 50 tokens vs our stops).

Reports seconds per cell, prompt tokens per second and ratios (naive / ours for seconds).

    .venv/bin/python benchmarks/needle_eval.py --lengths 1024,2048 --depths 0,50,100
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
ESSAYS = REPO.parent / "shared" / "reference" / "needle_haystack" / "PaulGrahamEssays"
BUFFER = 200  # the paper's final_context_length_buffer
NAIVE_NEW_TOKENS = 50


def naive_prompt(tok, haystack: str, length: int, depth: int, period_ids: set[int]) -> list[int]:
    """One cell's prompt ids built the paper's way (text round trips every cell)."""
    from longctx.eval.needle import PAPER_NEEDLE, PAPER_QUESTION, PAPER_TEMPLATE

    enc = tok.backend
    ids = enc.encode(haystack, add_special_tokens=False).ids  # whole haystack, every cell
    context = enc.decode(ids[:length])
    ctx_ids = enc.encode(context, add_special_tokens=False).ids
    needle_ids = enc.encode(PAPER_NEEDLE, add_special_tokens=False).ids
    budget = length - BUFFER
    if len(ctx_ids) + len(needle_ids) > budget:
        ctx_ids = ctx_ids[: budget - len(needle_ids)]
    if depth == 100:
        new_ids = ctx_ids + needle_ids
    else:
        point = int(len(ctx_ids) * depth / 100)
        while point > 0 and ctx_ids[point - 1] not in period_ids:
            point -= 1
        new_ids = ctx_ids[:point] + needle_ids + ctx_ids[point:]
    text = PAPER_TEMPLATE.format(context=enc.decode(new_ids), question=PAPER_QUESTION)
    return enc.encode(text, add_special_tokens=True).ids


def naive_generate(tok, model, prompt: list[int], new_tokens: int, fixed: bool) -> list[int]:
    import torch

    device = next(model.parameters()).device
    x = torch.tensor([prompt], device=device)
    extra = {"min_new_tokens": new_tokens} if fixed else {}
    with torch.inference_mode():
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=tok.eos_id,
            **extra,
        )
    return out[0, len(prompt) :].tolist()


PREFILL_CHUNK = 0


def naive_cell(tok, model, text, length, depth, period_ids, *, new_tokens, fixed, build_only):
    t1 = time.perf_counter()
    prompt = naive_prompt(tok, text, length, depth, period_ids)
    new = [] if build_only else naive_generate(tok, model, prompt, new_tokens, fixed)
    return {
        "prompt_tokens": len(prompt),
        "new_tokens": len(new),
        "seconds": time.perf_counter() - t1,
        "response": tok.decode(new, skip_special_tokens=True).strip(),
    }


def ours_cell(builder, tok, model, length, depth, *, new_tokens, stop, build_only):
    from longctx.eval.generate import first_line_done, greedy_generate
    from longctx.eval.needle import make_instance

    t1 = time.perf_counter()
    cell = builder.build(length, depth, make_instance("paper", 0, length, depth))
    new = []
    if not build_only:
        new = greedy_generate(
            model,
            cell.ids,
            max_new_tokens=new_tokens,
            stop_ids=[tok.eos_id] if stop else [],
            decode=lambda x: tok.decode(x, skip_special_tokens=True),
            stop_text=first_line_done if stop else None,
            prefill_chunk=PREFILL_CHUNK,
        )
    return {
        "prompt_tokens": len(cell.ids),
        "new_tokens": len(new),
        "seconds": time.perf_counter() - t1,
        "response": tok.decode(new, skip_special_tokens=True).strip(),
    }


def run_pair(tok, model, text, lengths, depths, period_ids, *, naive_kw, ours_kw):
    """Both ways over the grid, interleaved cell by cell (alternating which goes first) so
    both see the same machine load; ours also pays its one-time haystack tokenization."""
    from longctx.eval.needle import CellBuilder

    t0 = time.perf_counter()
    builder = CellBuilder(tok, text, max(lengths))  # one tokenization for the whole grid
    setup = time.perf_counter() - t0
    naive_rows, ours_rows = [], []
    cells = [(length, depth) for length in lengths for depth in depths]
    for k, (length, depth) in enumerate(cells):
        sides = ["naive", "ours"] if k % 2 == 0 else ["ours", "naive"]
        for side in sides:
            if side == "naive":
                row = naive_cell(tok, model, text, length, depth, period_ids, **naive_kw)
                naive_rows.append(row)
            else:
                ours_rows.append(ours_cell(builder, tok, model, length, depth, **ours_kw))
    naive_total = sum(r["seconds"] for r in naive_rows)
    ours_total = setup + sum(r["seconds"] for r in ours_rows)
    result = compare(summarize(naive_rows, naive_total), summarize(ours_rows, ours_total))
    result["ours_one_time_tokenization_s"] = round(setup, 3)
    return result, naive_rows, ours_rows


def summarize(rows, total: float) -> dict:
    toks = sum(r["prompt_tokens"] for r in rows)
    return {
        "cells": len(rows),
        "seconds_total": round(total, 3),
        "seconds_per_cell": round(total / len(rows), 4),
        "prompt_tokens": toks,
        "prompt_tokens_per_s": round(toks / total, 1),
        "new_tokens": sum(r["new_tokens"] for r in rows),
    }


def compare(naive: dict, ours: dict) -> dict:
    return {
        "naive": naive,
        "ours": ours,
        "speedup_seconds_per_cell": round(naive["seconds_per_cell"] / ours["seconds_per_cell"], 2),
        "speedup_tokens_per_s": round(
            ours["prompt_tokens_per_s"] / naive["prompt_tokens_per_s"], 2
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--lengths", default="1024,2048")
    ap.add_argument("--depths", default="0,50,100")
    ap.add_argument("--haystack", default=str(ESSAYS) if ESSAYS.is_dir() else "")
    ap.add_argument("--new-tokens", type=int, default=16, help="budget for the fixed comparison")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument(
        "--prefill-chunk", type=int, default=0, help="ours: prefill chunk (0 = one pass)"
    )
    ap.add_argument("--skip-default", action="store_true", help="skip comparison 3")
    ap.add_argument("--out", default="", help="also write the JSON result here")
    args = ap.parse_args()

    import torch

    from longctx.data.tokenizer import load_tokenizer
    from longctx.eval.generate import load_eval_model
    from longctx.eval.haystack import load_haystack

    global PREFILL_CHUNK
    PREFILL_CHUNK = args.prefill_chunk
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",")]
    depths = [int(x) for x in args.depths.split(",")]
    hay = load_haystack(args.haystack or None)
    model, folder = load_eval_model(args.model, rope_theta=None, max_length=max(lengths) + 64)
    tok = load_tokenizer(folder)
    period_ids = {i for i in (tok.backend.token_to_id("."),) if i is not None}
    # the paper re-appends the haystack until it holds max(lengths) tokens, once, at load
    text = hay.text
    while len(tok.backend.encode(text, add_special_tokens=False).ids) < max(lengths):
        text += hay.text

    # warm-up (allocator, kernels) so neither side pays first-call costs
    run_pair(
        tok,
        model,
        text,
        [min(lengths)],
        [50],
        period_ids,
        naive_kw=dict(new_tokens=2, fixed=True, build_only=False),
        ours_kw=dict(new_tokens=2, stop=False, build_only=False),
    )
    grid = (tok, model, text, lengths, depths, period_ids)

    result = {
        "model": args.model,
        "device": str(next(model.parameters()).device),
        "dtype": str(next(model.parameters()).dtype),
        "torch_threads": torch.get_num_threads(),
        "prefill_chunk": PREFILL_CHUNK,
        "haystack": hay.source,
        "lengths": lengths,
        "depths": depths,
    }
    result["build"], _, _ = run_pair(
        *grid,
        naive_kw=dict(new_tokens=0, fixed=True, build_only=True),
        ours_kw=dict(new_tokens=0, stop=False, build_only=True),
    )
    n = args.new_tokens
    result["fixed"], _, _ = run_pair(
        *grid,
        naive_kw=dict(new_tokens=n, fixed=True, build_only=False),
        ours_kw=dict(new_tokens=n, stop=False, build_only=False),
    )
    result["fixed"]["new_tokens_each"] = n
    if not args.skip_default:
        result["default"], nd, od = run_pair(
            *grid,
            naive_kw=dict(new_tokens=NAIVE_NEW_TOKENS, fixed=False, build_only=False),
            ours_kw=dict(new_tokens=32, stop=True, build_only=False),
        )
        result["responses"] = {
            "naive": [r["response"] for r in nd],
            "ours": [r["response"] for r in od],
        }
    out = json.dumps(result, indent=2)
    print(out)
    if args.out:
        Path(args.out).write_text(out + "\n")


if __name__ == "__main__":
    main()
