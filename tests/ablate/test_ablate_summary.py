"""Means, spreads, the noise rule and the verdict lines of ablation.json."""

from __future__ import annotations

import statistics

import pytest

from longctx.ablate.summary import assemble, compare, describe, difference, verdict_line


def test_describe_mean_spread_and_sample_std():
    s = describe([1.0, 2.0, 4.0, None, float("nan")])
    assert s["n"] == 3 and s["values"] == [1.0, 2.0, 4.0]
    assert s["mean"] == pytest.approx(7 / 3) and s["spread"] == 3.0
    assert s["std"] == pytest.approx(statistics.stdev([1.0, 2.0, 4.0]))
    one = describe([5.0])
    assert one["spread"] == 0.0 and one["std"] is None
    assert describe([])["mean"] is None


def _stat(values, interval=None):
    s = describe(values)
    if interval is not None:
        s["interval95"] = interval
    return s


def test_a_difference_counts_only_beyond_the_larger_seed_spread():
    base = _stat([2.00, 2.01])  # spread 0.01
    noisy = _stat([1.97, 1.99])  # spread 0.02, mean -0.025
    d = difference(base, noisy)
    assert d["noise_kind"] == "seed spread" and d["noise"] == pytest.approx(0.02)
    assert d["delta"] == pytest.approx(-0.025) and d["beyond"]
    close = _stat([1.985, 2.005])  # mean -0.01, above the paper's 0.01? no: inside 0.02
    d = difference(base, close)
    assert d["noise"] == pytest.approx(0.02) and not d["beyond"]
    # exactly at the spread is not beyond it
    assert not difference(_stat([1.0, 1.1]), _stat([1.1, 1.2]))["beyond"]


def test_one_seed_falls_back_to_bootstrap_intervals():
    base = _stat([2.00], [1.99, 2.01])  # half-width 0.01
    far = _stat([1.96], [1.95, 1.97])  # half-width 0.01: |delta| 0.04 > 0.02
    near = _stat([1.985], [1.975, 1.995])  # |delta| 0.015 < 0.02
    d = difference(base, far)
    assert d["noise_kind"] == "bootstrap 95%" and d["noise"] == pytest.approx(0.02)
    assert d["beyond"] and not difference(base, near)["beyond"]
    unknown = difference(_stat([2.0]), _stat([1.0]))
    assert unknown["noise"] is None and not unknown["beyond"]


def test_verdict_line_wording():
    base = {"loss": {"overall": {"4096-131072": _stat([1.30, 1.308])},
                     "domains": {}, "positions": {}}}
    better = {"loss": {"overall": {"4096-131072": _stat([1.279, 1.287])},
                       "domains": {}, "positions": {}}}
    line = verdict_line("per_source", "original", compare(base, better), [])
    assert line == ("per_source vs original: 4096-131072 loss \u22120.021 (spread 0.008): "
                    "better beyond noise")
    same = {"loss": {"overall": {"4096-131072": _stat([1.302, 1.31])},
                     "domains": {}, "positions": {}}}
    line = verdict_line("global", "original", compare(base, same), ["train.lr"])
    assert line.endswith("within noise (also differs in train.lr)")
    one = {"loss": {"overall": {"4096-131072": _stat([1.2])}, "domains": {}, "positions": {}}}
    line = verdict_line("b", "a", compare({"loss": {"overall": {"4096-131072": _stat([1.3])}}},
                                          one), [])
    assert "not judged" in line


def seed_record(seed: int, losses: dict[str, dict[str, float]], needle: float,
                shares: dict[str, float]) -> dict:
    """One arm x seed as summary.read_unit returns it, with the given numbers."""
    buckets = ["0-4096", "4096-131072"]
    overall = {b: sum(v[b] for v in losses.values()) / len(losses) for b in buckets}
    return {
        "seed": seed, "folder": f"arms/x/seed{seed}",
        "build": {"strategy": "original", "tokens_total": 1000, "seq_len": 100,
                  "long_token_fraction": 0.5, "warnings": [], "config_hash": str(seed),
                  "domains": {d: {"tokens": int(1000 * s), "share": s,
                                  "long_token_fraction": 0.5, "target_share": s}
                              for d, s in shares.items()}},
        "train": {"steps": 2, "tokens": 200, "seq_len": 100, "rope_parameters": {},
                  "final_loss": 2.0, "curve": [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0}]},
        "loss": {"split": "heldout", "buckets": buckets, "domains": losses, "overall": overall,
                 "positions": {"1024": 2.0, "16384": 1.8}, "interval95": {},
                 "overall_interval95": {}, "positions_interval95": {}, "tokens": {}},
        "needle": {"needle": "ruler", "headline": "ruler", "average": needle,
                   "trained_length": 100,
                   "cells": [{"length": 1024, "depth": 0, "score": needle},
                             {"length": 2048, "depth": 50, "score": 1 - needle}]},
    }


def synthetic_ablation(domain: str = "C4") -> dict:
    """Two arms, two seeds. C4: per_source is 0.02 lower with a spread of 0.03 (> the paper's
    0.01, inside the noise); Book: 0.05 lower with a spread of 0.01 (beyond the noise)."""
    shares = {domain: 0.6, "Book": 0.4}
    arms = {
        "original": {"mixture": {"strategy": "original"}, "differs": [], "seeds": [
            seed_record(0, {domain: {"0-4096": 2.00, "4096-131072": 1.50},
                            "Book": {"0-4096": 2.10, "4096-131072": 1.80}}, 0.5, shares),
            seed_record(1, {domain: {"0-4096": 2.03, "4096-131072": 1.50},
                            "Book": {"0-4096": 2.11, "4096-131072": 1.81}}, 0.5, shares)]},
        "per_source": {"mixture": {"strategy": "per_source"}, "differs": [], "seeds": [
            seed_record(0, {domain: {"0-4096": 1.98, "4096-131072": 1.50},
                            "Book": {"0-4096": 2.05, "4096-131072": 1.75}}, 1.0, shares),
            seed_record(1, {domain: {"0-4096": 2.01, "4096-131072": 1.50},
                            "Book": {"0-4096": 2.06, "4096-131072": 1.76}}, 1.0, shares)]},
    }
    held = {"mode": "auto", "split": "heldout", "scored": "arms/original/seed0/data/heldout",
            "digest": "abc", "rows": 4, "seq_len": 100}
    return assemble(arms, held, config={"model": "tiny", "build": {}, "train": {}},
                    seeds=[0, 1])


def test_assemble_compares_every_cell_against_the_first_arm():
    ab = synthetic_ablation()
    c4 = ab["comparisons"]["per_source"]["domains"]["C4"]["0-4096"]
    book = ab["comparisons"]["per_source"]["domains"]["Book"]["0-4096"]
    assert c4["delta"] == pytest.approx(-0.02) and c4["noise"] == pytest.approx(0.03)
    assert not c4["beyond"]
    assert book["delta"] == pytest.approx(-0.05) and book["beyond"]
    needle = ab["comparisons"]["per_source"]["needle"]
    assert needle["delta"] == pytest.approx(0.5) and needle["noise"] == 0.0 and needle["beyond"]
    assert len(ab["verdicts"]) == 1 and ab["verdicts"][0].startswith("per_source vs original: ")
    assert "needle +0.500 (spread 0.000): better beyond noise" in ab["verdicts"][0]
    assert ab["warnings"] == []


def test_training_rows_are_flagged():
    ab = synthetic_ablation()
    again = assemble(ab["arms"], {"split": "train", "scored": "x"}, config={}, seeds=[0, 1])
    assert any("TRAINING rows" in w for w in again["warnings"])


def _loss_json(doc_losses: list[float], domains: list[str]) -> dict:
    """A loss.json with one bucket and per-document sums (10 tokens per document)."""
    per = {"id": [f"f:{i}" for i in range(len(doc_losses))], "domain": domains,
           "bucket_sums": [[10 * x] for x in doc_losses], "bucket_counts": [[10]] * len(domains)}
    mean = {d: sum(x for x, e in zip(doc_losses, domains, strict=True) if e == d)
            / domains.count(d) for d in set(domains)}
    return {"stage": "eval.loss", "split": "heldout", "buckets": ["0-64"],
            "domains": {d: {"0-64": v} for d, v in mean.items()},
            "overall": {"0-64": sum(doc_losses) / len(doc_losses)}, "positions": {},
            "interval95": {d: {"0-64": [v - 0.5, v + 0.5]} for d, v in mean.items()},
            "overall_interval95": {"0-64": [1.0, 3.0]}, "per_document": per}


def test_one_seed_pairs_the_arms_document_by_document(tmp_path):
    """Documents vary a lot (their own intervals overlap widely), but the second arm is
    0.05 lower on every one of them: paired, that difference is beyond the noise."""
    import json
    import random

    import yaml

    from longctx.ablate.config import load_ablation_config
    from longctx.ablate.run import plan_units
    from longctx.ablate.summary import summarize

    from .ablate_helpers import CPU_PRESET

    data = yaml.safe_load(CPU_PRESET.read_text())
    data["arms"] = {"original": "original", "per_source": "per_source"}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_ablation_config(tmp_path / "a.yaml", out=str(tmp_path / "abl"),
                               overrides=["seeds=1"])
    units = plan_units(cfg)
    rng = random.Random(0)
    base = [rng.uniform(1.0, 3.0) for _ in range(40)]
    domains = ["A" if i % 2 else "B" for i in range(40)]
    shifted = [x - 0.05 + rng.uniform(-0.005, 0.005) for x in base]
    same = [x + rng.uniform(-0.005, 0.005) for x in base]
    for u, losses in zip(units, (base, shifted), strict=True):
        (u.root / "loss").mkdir(parents=True)
        (u.root / "loss" / "loss.json").write_text(json.dumps(_loss_json(losses, domains)))
    held = {"split": "heldout", "data": str(units[0].folder("data")), "scored": "x"}
    ab = summarize(cfg, units, held, None)
    d = ab["comparisons"]["per_source"]["overall"]["0-64"]
    assert d["noise_kind"] == "paired bootstrap 95%" and d["beyond"]
    assert d["interval95"][1] < 0 and d["delta"] == pytest.approx(-0.05, abs=0.003)
    assert ab["comparisons"]["per_source"]["domains"]["A"]["0-64"]["beyond"]
    assert "one seed; paired bootstrap \u00b1" in ab["verdicts"][0]
    assert "better beyond noise" in ab["verdicts"][0]
    # the same documents without the shift: within noise
    (units[1].root / "loss" / "loss.json").write_text(json.dumps(_loss_json(same, domains)))
    ab = summarize(cfg, units, held, None)
    assert not ab["comparisons"]["per_source"]["overall"]["0-64"]["beyond"]
    assert "within noise" in ab["verdicts"][0]
