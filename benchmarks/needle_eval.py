"""Needle grid speed: token-slice cells + cached greedy decoding vs the paper's way.

Baseline ("naive", the paper's eval/needle script as described in FACTS.md §4): for every
cell, encode the whole haystack, cut to the context length, decode, re-encode, trim by the
200-token buffer, move the insertion point left to a period, insert the needle ids, decode
to text, format the prompt, tokenize it again and call ``model.generate`` (greedy,
max_new_tokens=50).

Ours: the haystack is tokenized once for the whole grid, each cell is built from id slices
(``CellBuilder``) and decoded with ``greedy_generate`` (chunked prefill, last-position
logits, stop at the end of the first answer line). We also time ours with the baseline's
decoding budget (50 tokens, no early stop) to separate cell construction from decoding.

Same model, same haystack, same grid, same process, measured one after the other.
Reports seconds per cell, prompt tokens per second and the ratios.

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


def naive_cell(tok, model, haystack: str, length: int, depth: int, period_ids: set[int]):
    """One cell the paper's way; returns (response, prompt_tokens)."""
    import torch

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
    prompt = enc.encode(text, add_special_tokens=True).ids
    x = torch.tensor([prompt])
    with torch.inference_mode():
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=NAIVE_NEW_TOKENS,
            do_sample=False,
            use_cache=True,
            pad_token_id=tok.eos_id,
        )
    response = enc.decode(out[0, len(prompt) :].tolist(), skip_special_tokens=True).strip()
    return response, len(prompt)


def ours_grid(tok, model, haystack: str, lengths, depths, *, max_new, stop):
    from longctx.eval.generate import first_line_done, greedy_generate
    from longctx.eval.needle import CellBuilder, make_instance

    t0 = time.perf_counter()
    builder = CellBuilder(tok, haystack, max(lengths))  # one tokenization for the grid
    rows = []
    for length in lengths:
        for depth in depths:
            t1 = time.perf_counter()
            cell = builder.build(length, depth, make_instance("paper", 0, length, depth))
            new = greedy_generate(
                model,
                cell.ids,
                max_new_tokens=max_new,
                stop_ids=[tok.eos_id],
                decode=lambda x: tok.decode(x, skip_special_tokens=True),
                stop_text=first_line_done if stop else None,
            )
            rows.append(
                {
                    "length": length,
                    "depth": depth,
                    "prompt_tokens": len(cell.ids),
                    "new_tokens": len(new),
                    "seconds": time.perf_counter() - t1,
                    "response": tok.decode(new, skip_special_tokens=True).strip(),
                }
            )
    return rows, time.perf_counter() - t0


def summarize(rows, total: float) -> dict:
    toks = sum(r["prompt_tokens"] for r in rows)
    return {
        "cells": len(rows),
        "seconds_total": round(total, 3),
        "seconds_per_cell": round(total / len(rows), 3),
        "prompt_tokens": toks,
        "prompt_tokens_per_s": round(toks / total, 1),
        "new_tokens": sum(r.get("new_tokens", 0) for r in rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--lengths", default="1024,2048")
    ap.add_argument("--depths", default="0,50,100")
    ap.add_argument("--haystack", default=str(ESSAYS) if ESSAYS.is_dir() else "")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--out", default="", help="also write the JSON result here")
    args = ap.parse_args()

    import torch

    from longctx.data.tokenizer import load_tokenizer
    from longctx.eval.generate import load_eval_model
    from longctx.eval.haystack import load_haystack

    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",")]
    depths = [int(x) for x in args.depths.split(",")]
    hay = load_haystack(args.haystack or None)
    model, folder = load_eval_model(args.model, rope_theta=None, max_length=max(lengths) + 64)
    tok = load_tokenizer(folder)
    period_ids = {i for i in (tok.backend.token_to_id("."),) if i is not None}

    # warm-up (allocator, kernels) so neither side pays first-call costs
    ours_grid(tok, model, hay.text[:20000], [256], [50], max_new=4, stop=False)

    t0 = time.perf_counter()
    naive_rows = []
    for length in lengths:
        for depth in depths:
            t1 = time.perf_counter()
            resp, n = naive_cell(tok, model, hay.text, length, depth, period_ids)
            naive_rows.append(
                {
                    "length": length,
                    "depth": depth,
                    "prompt_tokens": n,
                    "seconds": time.perf_counter() - t1,
                    "response": resp,
                }
            )
    naive_total = time.perf_counter() - t0
    ours_rows, ours_total = ours_grid(tok, model, hay.text, lengths, depths, max_new=32, stop=True)
    same_rows, same_total = ours_grid(
        tok, model, hay.text, lengths, depths, max_new=NAIVE_NEW_TOKENS, stop=False
    )
    naive, ours, same = (
        summarize(naive_rows, naive_total),
        summarize(ours_rows, ours_total),
        summarize(same_rows, same_total),
    )
    result = {
        "model": args.model,
        "device": str(next(model.parameters()).device),
        "torch_threads": torch.get_num_threads(),
        "haystack": hay.source,
        "lengths": lengths,
        "depths": depths,
        "naive_paper_way": naive,
        "ours": ours,
        "ours_same_decoding_50_tokens": same,
        "speedup_seconds_per_cell": round(naive["seconds_per_cell"] / ours["seconds_per_cell"], 2),
        "speedup_tokens_per_s": round(
            ours["prompt_tokens_per_s"] / naive["prompt_tokens_per_s"], 2
        ),
        "speedup_same_decoding_tokens_per_s": round(
            same["prompt_tokens_per_s"] / naive["prompt_tokens_per_s"], 2
        ),
        "responses": {
            "naive": [r["response"] for r in naive_rows],
            "ours": [r["response"] for r in ours_rows],
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
