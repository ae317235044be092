"""Figures with hostile names (math text, surrogates, control characters) and tens of
thousands of domains: eval and report plots draw them verbatim and bounded."""

from __future__ import annotations

import time

import pytest

from longctx.plotting import MAX_DOMAINS, label, plain_text, split_top

PNG = b"\x89PNG\r\n\x1a\n"
MATH = r"$\undefinedcmd$"
HOSTILE = [MATH, "$x^2$", "lone \ud800", "\udcff", "tab\tnew\nline", "a_b%#&{}\\", "x" * 300]


def _draw(text: str) -> bytes:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    fig.add_subplot(1, 1, 1).set_title(text)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_math_text_names_are_hostile_without_plain_text():
    """The reproduction: matplotlib parses $...$ and dies on an unknown command."""
    with pytest.raises(ValueError):
        _draw(MATH)
    with plain_text():
        assert _draw(MATH).startswith(PNG)


def test_label_escapes_what_fonts_cannot_draw_and_bounds_the_width():
    assert label("lone \ud800") == "lone \\ud800"
    assert label("tab\tnew\nline") == "tab\\tnew\\nline"
    assert label("x" * 300) == "x" * 39 + "…"
    assert label(MATH) == MATH  # drawn verbatim, not rewritten
    for name in HOSTILE:
        label(name).encode("utf-8")


def test_split_top_keeps_order_and_folds_the_rest():
    assert split_top({"b": 1, "a": 2}, limit=3) == (["b", "a"], [])
    weights = {f"d{i}": i for i in range(10)}
    top, rest = split_top(weights, limit=4)
    assert top == ["d7", "d8", "d9"] and rest == [f"d{i}" for i in range(7)]
    top, rest = split_top({"x": float("nan"), "y": 1.0, "z": "junk"}, limit=2)
    assert top == ["y"] and sorted(rest) == ["x", "z"]


def _loss_result(domains: list[str]) -> dict:
    return {
        "model": f"/runs/{MATH}",
        "buckets": ["0-4096", "4096-131072"],
        "domains": {d: {"0-4096": 2.0 + i / 1e4, "4096-131072": 1.5} for i, d in enumerate(domains)},
        "positions": {"1024": 2.0, "4096": 1.8},
        "tokens": {"domains": {d: {"0-4096": i, "4096-131072": 1} for i, d in enumerate(domains)}},
    }


def test_eval_plots_with_hostile_and_many_domains(tmp_path):
    from longctx.plotting import loss_domains, loss_figure, needle_figure, save_png

    domains = HOSTILE + [f"d{i}" for i in range(5000)]
    result = _loss_result(domains)
    shown, left_out = loss_domains(result)
    assert len(shown) == MAX_DOMAINS - 1 and left_out == len(domains) - len(shown)
    assert "d4999" in shown and MATH not in shown  # the most scored tokens are drawn
    t0 = time.monotonic()
    save_png(loss_figure(result), tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes().startswith(PNG)
    assert time.monotonic() - t0 < 30
    needle = {"model": f"/m/{MATH}", "needle": "$ruler$", "headline": MATH, "average": 0.5,
              "cells": [{"length": 1024, "depth": 0, "score": 1.0},
                        {"length": 2048, "depth": 50, "score": 0.0}]}
    save_png(needle_figure(needle), tmp_path / "needle.png")
    assert (tmp_path / "needle.png").read_bytes().startswith(PNG)


def test_report_plots_with_hostile_and_many_domains():
    from longctx.report import plots

    names = HOSTILE + [f"d{i}" for i in range(5000)]
    stats = {"long_threshold": 4096, "domains": {
        n: {"tokens": i + 1, "token_share": 1 / len(names), "long_token_fraction": 0.5}
        for i, n in enumerate(names)}}
    build = {
        "input": {n: {"docs": 1, "tokens": i + 1, "long_token_fraction": 0.2}
                  for i, n in enumerate(names)},
        "domains": {n: {"tokens": 2 * i + 1, "target_tokens": 2 * i + 1, "long_token_fraction": 0.6}
                    for i, n in enumerate(names)},
    }
    t0 = time.monotonic()
    for png in (
        plots.stats_plot(stats, title=MATH),
        plots.mixture_plot(build, title=MATH),
        plots.loss_plot(_loss_result(names), title="lone \ud800"),
        plots.training_curve([{"step": 1, "loss": 2.0}], title=MATH),
        plots.needle_heatmap({"cells": [{"length": 1024, "depth": 0, "score": 1}],
                              "average": 1.0}, title=MATH),
    ):
        assert png.startswith(PNG)
    assert time.monotonic() - t0 < 60
    rows = plots.bounded_rows(plots.mixture_rows(build))
    assert len(rows) == MAX_DOMAINS and rows[-1]["domain"].startswith("other (")
    assert sum(r["input_share"] for r in rows) == pytest.approx(1.0)
    assert sum(r["output_share"] for r in rows) == pytest.approx(1.0)
    assert rows[-1]["output_long"] == pytest.approx(0.6)
