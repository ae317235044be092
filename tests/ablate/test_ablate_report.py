"""The ablation's report section: Table 5 / Fig. 3 / Fig. 4 views, highlighting only beyond the
measured noise, everything escaped, and the page renders in headless Chromium."""

from __future__ import annotations

import pytest

from longctx.report.ablation import ablation_section
from longctx.report.html import write_report
from tests.report.htmlparse import decode_png, parse

from .test_ablate_summary import synthetic_ablation


def _tables(doc: str) -> dict:
    return {t.heading: t for t in parse(doc).tables}


def _row(table, first: str) -> list[tuple[str, str]]:
    return next(r for r in table.rows if r and r[0][0].startswith(first))


def test_table5_highlights_only_differences_beyond_the_seed_spread():
    html, images = ablation_section(synthetic_ablation())
    tables = _tables(html)
    short = tables["0-4096 tokens"]
    header = [t for t, _ in short.rows[0]]
    assert header == ["context 0-4096", "Book", "C4", "overall"]
    base = _row(short, "original (first arm)")
    assert base[2][0].startswith("2.015") and "spread 0.030" in base[2][0]
    vs = dict(zip(header, _row(short, "v.s. per_source"), strict=True))
    # C4: -0.020 is above the paper's 0.01 but inside the 0.03 seed spread: not coloured
    assert vs["C4"][0].startswith("-0.020") and "±0.030" in vs["C4"][0]
    assert "better" not in vs["C4"][1] and "worse" not in vs["C4"][1]
    # Book: -0.050 beyond a 0.01 spread: coloured as better
    assert vs["Book"][0].startswith("-0.050") and vs["Book"][1] == "better"
    long = tables["4096-131072 tokens"]
    vs = dict(zip(header[1:], _row(long, "v.s. per_source")[1:], strict=True))
    assert vs["C4"][0].startswith("+0.000") and vs["C4"][1] == ""
    assert vs["Book"][1] == "better"
    needle = tables["Needle in a haystack (the paper's Fig. 4 view)"]
    assert _row(needle, "per_source")[2][1] == "better"
    assert images == 4


def test_everything_is_escaped():
    evil = '<img src=x onerror="alert(1)">'
    html, _ = ablation_section(synthetic_ablation(domain=evil))
    assert evil not in html and "<script" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    p = parse(html)
    assert all(src.startswith("data:image/png;base64,") for src in p.imgs)
    assert [u for u in p.urls if not u[2].startswith("data:")] == []


@pytest.mark.slow
def test_report_of_a_finished_ablation(finished, tmp_path):
    page = finished.dir / "report.html"
    doc = page.read_text()
    p = parse(doc)
    heads = [t.heading for t in p.tables]
    assert "0-128 tokens" in heads and "128-512 tokens" in heads and "Loss@position" in heads
    assert "Mixture of each arm" in heads
    for src in p.imgs:
        w, h = decode_png(src)
        assert w > 100 and h > 100
    assert len(p.imgs) == 4
    text = "".join(p.text)
    for line in finished.result["verdicts"]:
        assert line in text
    assert "Comparison" not in heads  # the generic 0.01-rule comparison is not shown
    # coloured cells are exactly the differences beyond their measured noise
    beyond = 0
    for diffs in finished.result["comparisons"].values():
        cells = [d for per in diffs["domains"].values() for d in per.values()]
        cells += [*diffs["overall"].values(), *diffs["positions"].values(), diffs["needle"]]
        for d in cells:
            if d["delta"] is not None:
                assert d["beyond"] == (round(abs(d["delta"]), 12) > round(d["noise"], 12))
            beyond += bool(d["beyond"])
    coloured = sum(c in ("better", "worse") for t in p.tables for r in t.rows for _, c in r)
    assert coloured == beyond
    # `longctx report DIR` renders the same section
    out = tmp_path / "again.html"
    images = write_report([finished.dir], out)
    assert images == 4 and "Per-domain loss against the first arm" in out.read_text()


@pytest.mark.slow
@pytest.mark.browser
def test_ablation_report_renders_in_chromium(finished, tmp_path):
    from tests.report.browser_probe import assert_clean, browser_check

    result = browser_check(finished.dir / "report.html", tmp_path)
    assert result["title"].startswith("longctx ablation")
    assert_clean(result, 4)


@pytest.mark.slow
def test_base_model_is_evaluated_on_the_same_rows_and_shown(finished, ablate_corpus, tmp_path):
    """eval.base: the base model (here the first arm's trained model, as a stand-in for a
    pretrained one) is scored on the ablation's one held-out set and appears in the report."""
    from longctx.ablate.run import StageLog, Unit, _base_evals, resolve_heldout
    from longctx.ablate.summary import read_loss

    from .ablate_helpers import cpu_config

    model = finished.dir / "arms" / "original" / "seed0" / "train" / "final"
    cfg = cpu_config(tmp_path / "abl", ablate_corpus, f"model={model}", "eval.base=true")
    first = Unit(cfg.arm_list()[0], 0, finished.dir / "arms" / "original" / "seed0")
    held = resolve_heldout(cfg, first)
    assert held["digest"] == finished.result["heldout"]["digest"]
    root = _base_evals(cfg, held, StageLog(lambda s: None), False)
    base = read_loss(root / "loss")
    arm = finished.result["arms"]["original"]["seeds"][0]["loss"]
    assert base["split"] == "heldout" and base["overall"] == arm["overall"]  # same model, rows
    ab = dict(finished.result, base_model={"loss": base, "needle": None})
    html, _ = ablation_section(ab)
    row = _row(_tables(html)["0-128 tokens"], "base model (as shipped)")
    assert row[-1][0] == f"{arm['overall']['0-128']:.3f}"
