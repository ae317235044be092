"""Needle runs on the embedded SmolLM2-135M: decoding parity, resumability, the must-hold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from longctx.eval.needle import NeedleConfig, run_needle

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def test_greedy_generate_matches_hf_generate(smollm2_tokenizer):
    import torch

    from longctx.eval.generate import greedy_generate, load_eval_model

    model, _ = load_eval_model("smollm2-135m", rope_theta=None, max_length=512)
    prompt = smollm2_tokenizer.encode_plain(["The capital of France is Paris. The capital of"])[0]
    ours = greedy_generate(model, prompt, max_new_tokens=12, prefill_chunk=5)  # chunked prefill
    with torch.inference_mode():
        ref = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=12,
            do_sample=False,
            use_cache=True,
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            eos_token_id=None,
            pad_token_id=0,
        )[0, len(prompt) :].tolist()
    assert ours == ref


def test_run_is_resumable_cell_by_cell(tmp_path: Path):
    cfg = NeedleConfig(lengths=[256], depths=[0, 100], needle="ruler", max_new_tokens=6)
    cfg.validate()
    first = run_needle(cfg, tmp_path, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stage"] == "eval.needle" and manifest["status"] == "done"
    assert manifest["counts"] == {"cells": 2, "computed_now": 2, "reused": 0}
    assert [(c["length"], c["depth"]) for c in first["cells"]] == [(256, 0), (256, 100)]

    again = run_needle(cfg, tmp_path, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["counts"]["computed_now"] == 0
    assert again["cells"] == first["cells"]

    # drop one finished cell (as if interrupted): only that cell is recomputed
    lines = (tmp_path / "cells.jsonl").read_text().splitlines()
    (tmp_path / "cells.jsonl").write_text(lines[0] + "\n")
    third = run_needle(cfg, tmp_path, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["counts"]["computed_now"] == 1
    assert [c["response"] for c in third["cells"]] == [c["response"] for c in first["cells"]]

    # a change that affects results (decoding budget) invalidates old cells
    cfg2 = NeedleConfig(lengths=[256], depths=[0], needle="ruler", max_new_tokens=4)
    cfg2.validate()
    run_needle(cfg2, tmp_path, progress=False)
    assert json.loads((tmp_path / "manifest.json").read_text())["counts"]["computed_now"] == 1


@pytest.mark.slow
def test_must_hold_ruler_needle_smollm2(tmp_path: Path, paul_graham_essays):
    """eval needle --needle ruler on smollm2-135m at 1K and 2K x depths 0/50/100 averages >= 0.8,
    writes needle.json with sha256 provenance and a valid needle.png."""
    from PIL import Image

    from longctx.cli import main

    out = tmp_path / "needle"
    main(
        [
            "eval",
            "needle",
            "--model",
            "smollm2-135m",
            "--needle",
            "ruler",
            "--lengths",
            "1024,2048",
            "--depths",
            "0,50,100",
            "--haystack",
            str(paul_graham_essays),
            "--trained-length",
            "1536",
            "--out",
            str(out),
        ]
    )
    result = json.loads((out / "needle.json").read_text())
    assert result["stage"] == "eval.needle" and result["needle"] == "ruler"
    assert result["headline"] == "ruler" and result["trained_length"] == 1536
    assert len(result["cells"]) == 6
    for c in result["cells"]:
        assert set(c) >= {"length", "depth", "score", "scores", "response", "seconds"}
        assert c["score"] == c["scores"]["ruler"]
        assert c["prompt_tokens"] == c["length"]
    assert result["average"] >= 0.8, [c["response"] for c in result["cells"]]
    prov = result["provenance"]
    for key in ("needle_sha256", "prompt_template_sha256", "scorer_version_sha256"):
        assert HEX64.match(prov[key]), key
    assert HEX64.match(prov["haystack"]["sha256"]) and HEX64.match(prov["haystack"]["sha256_used"])
    assert prov["scorer_version"]
    with Image.open(out / "needle.png") as im:
        im.verify()
    with Image.open(out / "needle.png") as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 150
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "eval.needle" and manifest["status"] == "done"
