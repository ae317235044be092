"""Prefix KV-cache reuse across needle cells: same tokens and scores as per-cell prefill.

Checked on a tiny random LLaMA (fp32, CPU) for the cache mechanics (crop, RoPE positions of
the continued suffix, chunk boundaries, a prompt that is a prefix of the previous one) and on
the embedded SmolLM2-135M for whole runs (cell by cell, and after a resume), plus the grid
order: it prefills as few tokens as the lexicographic order, which walks the prompt trie.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from longctx.eval.generate import PromptCache, common_prefix_length, greedy_generate, prefill
from longctx.eval.haystack import default_haystack
from longctx.eval.needle import (
    CellBuilder,
    NeedleConfig,
    build_needle,
    prefix_key,
    prefix_order,
    run_needle,
)

VOCAB = 97


@pytest.fixture(scope="module")
def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, rope_theta=10000.0,
                      initializer_range=0.3)  # logits of a few units, not ~0.1: sensitive
    return LlamaForCausalLM(cfg).float().eval()


def _prompts() -> list[list[int]]:
    """Prompts in an order that exercises every reuse case after the first."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, VOCAB, 300).tolist()
    other = rng.integers(0, VOCAB, 40).tolist()
    return [
        base[:200],  # fresh cache
        base[:120] + other + base[120:200],  # diverges at 120: crop 200+generated -> 120
        base[:120] + other[:10],  # all of it is the previous prompt's prefix: keeps 129
        base[:300],  # shares 120, grows past the previous prompt
        base[:250],  # a prefix of the previous prompt: keeps 249, runs the last one
        base[:250],  # identical prompt
        other + base[:100],  # nothing shared: a fresh cache
        other[:1],  # one token
    ]


def test_reuse_gives_the_same_tokens_and_logits_as_fresh_prefill(tiny_llama):
    prompts = _prompts()
    cache = PromptCache()
    worst = 0.0
    for chunk in (0, 37):
        for ids in prompts:
            ref_logits, _ = prefill(tiny_llama, ids, prefill_chunk=chunk)
            ref = greedy_generate(tiny_llama, ids, max_new_tokens=8, prefill_chunk=chunk)
            # greedy_generate first (leaves prompt + 7 generated tokens in the cache), then
            # the logits of the next prompt through a cache cropped from that state
            got = greedy_generate(tiny_llama, ids, max_new_tokens=8, prefill_chunk=chunk,
                                  prompt_cache=cache)
            assert got == ref
            kept = cache.reused_tokens
            logits, _ = prefill(tiny_llama, ids, prefill_chunk=chunk, prompt_cache=cache)
            assert cache.reused_tokens - kept == len(ids) - 1  # the same prompt again
            worst = max(worst, float((logits - ref_logits).abs().max()))
    assert worst < 1e-4, worst


def test_long_rest_after_a_kept_prefix_runs_in_bounded_passes(tiny_llama, monkeypatch):
    """Without prefill_chunk, what follows a kept prefix runs in passes of at most REUSE_PASS
    tokens (their explicit masks stay small); the tokens do not change."""
    from longctx.eval import generate

    monkeypatch.setattr(generate, "REUSE_PASS", 50)
    passes: list[int] = []
    hook = tiny_llama.register_forward_pre_hook(
        lambda _m, _a, kw: passes.append(kw["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        cache = PromptCache()
        for ids in _prompts()[:4]:
            ref = greedy_generate(tiny_llama, ids, max_new_tokens=4)
            passes.clear()
            kept = cache.reused_tokens
            assert greedy_generate(tiny_llama, ids, max_new_tokens=4, prompt_cache=cache) == ref
            kept = cache.reused_tokens - kept
            prompt_passes = passes[:-3]  # then 3 one-token decoding steps
            assert sum(prompt_passes) == len(ids) - kept
            if kept:
                assert max(prompt_passes) <= 50
            else:
                assert prompt_passes == [len(ids)]  # a fresh prompt: one pass, as before
    finally:
        hook.remove()
    assert prompt_passes == [50, 50, 50, 30]  # the last prompt: 300 tokens, 120 kept


def test_claim_keeps_the_common_prefix_and_counts_tokens(tiny_llama):
    prompts = _prompts()
    cache = PromptCache()
    expect_kept = [0, 120, 129, 120, 249, 249, 0, 0]
    for ids, kept in zip(prompts, expect_kept, strict=True):
        before = cache.reused_tokens
        greedy_generate(tiny_llama, ids, max_new_tokens=3, prompt_cache=cache)
        assert cache.reused_tokens - before == kept
        # the cache now holds the prompt plus the generated tokens but the last
        assert cache.cache.get_seq_length() == len(ids) + 2
    assert cache.prefilled_tokens + cache.reused_tokens == sum(len(p) for p in prompts)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # past_key_values, as generate.py passes it
def test_a_wrong_position_offset_would_be_caught(tiny_llama):
    """The logit check above is sharp: a suffix run at positions 0.. instead of n.. (what a
    reused prefix with restarted RoPE positions would give) moves the logits far."""
    ids = _prompts()[3]
    ref, _ = prefill(tiny_llama, ids)
    cache = PromptCache()
    prefill(tiny_llama, ids[:120], prompt_cache=cache)
    with torch.inference_mode():
        out = tiny_llama(input_ids=torch.tensor([ids[120:]]), past_key_values=cache.cache,
                         position_ids=torch.arange(len(ids) - 120)[None], use_cache=True)
    assert float((out.logits[:, -1] - ref).abs().max()) > 1e-2


def test_common_prefix_length():
    a = np.array([1, 2, 3, 4])
    assert common_prefix_length(a, np.array([1, 2, 9])) == 2
    assert common_prefix_length(a, np.array([1, 2])) == 2
    assert common_prefix_length(a, np.array([5])) == 0
    assert common_prefix_length(np.zeros(0, np.int64), a) == 0


def _prefill_cost(prompts: list[list[int]]) -> int:
    """Tokens prefilled running ``prompts`` in this order with one cropped cache."""
    cost, prev = 0, np.zeros(0, np.int64)
    for p in prompts:
        cur = np.asarray(p)
        cost += len(p) - min(common_prefix_length(prev, cur), len(p) - 1)
        prev = cur
    return cost


@pytest.mark.parametrize("kind,samples", [("paper", 1), ("ruler", 1), ("ruler", 3)])
def test_grid_order_prefills_as_few_tokens_as_the_prompt_trie(smollm2_tokenizer, kind, samples):
    cfg = NeedleConfig(lengths=[300, 700, 1000, 1500], depths=[0, 10, 33, 50, 77, 100],
                       needle=kind, samples=samples)
    cfg.validate()
    builder = CellBuilder(smollm2_tokenizer, default_haystack().text, max(cfg.lengths))
    grid = [(L, d) for L in cfg.lengths for d in cfg.depths]

    def prompts(order):
        out = []
        for L, d in order:
            cells = [build_needle(cfg, builder, L, d, k) for k in range(cfg.samples)]
            out += [c.ids for c in sorted(cells, key=prefix_key)]
        return out

    ours = _prefill_cost(prompts(prefix_order(cfg, builder, grid)))
    every = prompts(grid)
    trie = _prefill_cost(sorted(every))  # lexicographic order: each trie node once
    total = sum(len(p) for p in every)
    if samples == 1:
        assert ours == trie
    else:  # samples stay together per cell: a few needle tokens more than the trie walk
        assert trie <= ours <= trie + 20 * len(grid)
    assert ours < 0.75 * total
    assert _prefill_cost(every) > ours  # the grid's own order shares less


def _run(tmp: Path, reuse: bool, **kw) -> tuple[dict, dict]:
    cfg = NeedleConfig(prefix_reuse=reuse, max_new_tokens=8, **kw)
    cfg.validate()
    result = run_needle(cfg, tmp, progress=False)
    return result, json.loads((tmp / "manifest.json").read_text())


def _same_cells(a: dict, b: dict) -> None:
    for x, y in zip(a["cells"], b["cells"], strict=True):
        assert (x["length"], x["depth"]) == (y["length"], y["depth"])
        assert x["response"] == y["response"]
        assert x["scores"] == y["scores"]
        assert x.get("samples") == y.get("samples")
    assert a["average"] == b["average"]


@pytest.mark.parametrize("kind,samples,lengths", [
    ("paper", 1, [256, 512]),
    pytest.param("ruler", 2, [256, 320], marks=pytest.mark.slow),  # ~40 s on 2 cores
])
def test_run_with_reuse_equals_per_cell_prefill(tmp_path: Path, kind, samples, lengths):
    grid = dict(lengths=lengths, depths=[0, 50, 100], needle=kind, samples=samples)
    ref, ref_manifest = _run(tmp_path / "ref", False, **grid)
    got, manifest = _run(tmp_path / "reuse", True, **grid)
    _same_cells(ref, got)
    assert ref_manifest["prefill"]["tokens_from_cache"] == 0
    prompt_tokens = sum(lengths) * 3 * samples
    assert manifest["prefill"]["prompt_tokens"] == prompt_tokens
    assert 0.2 * prompt_tokens < manifest["prefill"]["tokens_from_cache"] < prompt_tokens

    # resume: keep two finished cells; the other four run again in prefix order, each
    # reusing a cache whose prompt differs from the full run's, with the same results
    lines = (tmp_path / "reuse" / "cells.jsonl").read_text().splitlines()
    (tmp_path / "reuse" / "cells.jsonl").write_text("\n".join(lines[1::3]) + "\n")
    again, manifest = _run(tmp_path / "reuse", True, **grid)
    assert manifest["counts"]["computed_now"] == 4
    _same_cells(ref, again)


def test_reuse_on_the_embedded_model_keeps_logits(smollm2_tokenizer):
    """Max abs difference of the last prompt token's logits, cache reused vs fresh, on real
    cells (the second cell reuses the first one's prefix up to its needle)."""
    from longctx.eval.generate import load_eval_model

    model, _ = load_eval_model("smollm2-135m", rope_theta=None, max_length=1024)
    cfg = NeedleConfig(needle="paper")
    builder = CellBuilder(smollm2_tokenizer, default_haystack().text, 1024)
    first, second = (build_needle(cfg, builder, 1024, d, 0) for d in (50, 100))
    cache = PromptCache()
    prefill(model, first.ids, prompt_cache=cache)
    got, _ = prefill(model, second.ids, prompt_cache=cache)
    ref, _ = prefill(model, second.ids)
    assert cache.reused_tokens >= first.needle_start
    assert int(got.argmax()) == int(ref.argmax())
    assert float((got - ref).abs().max()) < 1e-3
