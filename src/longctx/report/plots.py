"""Plots for the report, drawn from the stage JSON files (Agg canvases, no pyplot state).

Stages write their own PNGs (stats.png, needle.png, loss.png); the report re-uses those and
draws only what is missing: the training curve, the before/after-mixing view of a build
manifest, and fallbacks for stage PNGs that are absent (the needle and loss fallbacks are the
stages' own figure functions, from :mod:`longctx.plotting`). Every function returns PNG bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from longctx.plotting import (
    finite,
    label,
    loss_figure,
    needle_figure,
    new_figure,
    other_label,
    png_bytes,
    short_domain,
    split_top,
    stats_figure,
    verbatim,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_num = finite
_short = short_domain


def _png(fig: Any) -> bytes:
    return png_bytes(fig, dpi=100)


@verbatim
def training_curve(metrics: Sequence[dict[str, Any]], title: str = "training") -> bytes:
    """Loss (and held-out loss) per step; tokens/s on a second axis when logged."""
    fig = new_figure((7, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    steps = [m.get("step") for m in metrics]
    pts = [(s, _num(m.get("loss"))) for s, m in zip(steps, metrics, strict=True)]
    pts = [(s, v) for s, v in pts if v is not None and _num(s) is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label="train loss")
    ev = [(m.get("step"), _num(m.get("eval_loss"))) for m in metrics]
    ev = [(s, v) for s, v in ev if v is not None and _num(s) is not None]
    if ev:
        ax.plot([p[0] for p in ev], [p[1] for p in ev], marker="s", ms=4, label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    tps = [(m.get("step"), _num(m.get("tokens_per_s"))) for m in metrics]
    tps = [(s, v) for s, v in tps if v is not None and _num(s) is not None]
    if tps:
        ax2 = ax.twinx()
        ax2.plot([p[0] for p in tps], [p[1] for p in tps], color="grey", ls=":", label="tokens/s")
        ax2.set_ylabel("tokens/s", color="grey")
    ax.legend(loc="upper right", fontsize=8)
    title = label(title, 120)
    ax.set_title(title if pts else f"{title} (no loss logged yet)")
    return _png(fig)


def needle_heatmap(needle: dict[str, Any], title: str = "needle") -> bytes:
    """The stage's needle heatmap (:func:`longctx.plotting.needle_figure`) as PNG bytes."""
    return _png(needle_figure(needle, title))


def loss_plot(loss: dict[str, Any], title: str = "loss") -> bytes:
    """The stage's loss figure (:func:`longctx.plotting.loss_figure`) as PNG bytes."""
    return _png(loss_figure(loss, title))


def _bars(ax: Any, names: list[str], series: dict[str, list[float | None]], ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    for j, (name, vals) in enumerate(series.items()):
        xs = [i + j * width for i in range(len(names))]
        ax.bar(xs, [v if v is not None else 0 for v in vals], width, label=name)
    ax.set_xticks(
        [i + width * (len(series) - 1) / 2 for i in range(len(names))],
        [label(_short(n)) for n in names],
        rotation=30,
        ha="right",
    )
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def stats_plot(stats: dict[str, Any], title: str | None = None) -> bytes:
    """The stage's Fig. 2 view (:func:`longctx.plotting.stats_figure`) as PNG bytes."""
    return _png(stats_figure(stats, title=title))


def _weighted(entries: list[dict[str, Any]], key: str, weight: str) -> float | None:
    """The ``weight``-weighted mean of ``key`` over entries (None when nothing is weighed)."""
    pairs = [(_num(e.get(key)), _num(e.get(weight)) or 0) for e in entries]
    total = sum(w for v, w in pairs if v is not None)
    return sum(v * w for v, w in pairs if v is not None) / total if total else None


@verbatim
def mixture_plot(build: dict[str, Any], title: str = "mixture") -> bytes:
    """Input vs output token share and long-token fraction per domain for one data build;
    at most MAX_DOMAINS bars, the smallest domains summed as "other"."""
    rows = bounded_rows(mixture_rows(build))
    names = [r["domain"] for r in rows]
    fig = new_figure((10, 3.6))
    _bars(
        fig.add_subplot(1, 2, 1),
        names,
        {
            "input": [r["input_share"] for r in rows],
            "output": [r["output_share"] for r in rows],
        },
        "share of tokens",
    )
    _bars(
        fig.add_subplot(1, 2, 2),
        names,
        {
            "input": [r["input_long"] for r in rows],
            "output": [r["output_long"] for r in rows],
        },
        "long-token fraction",
    )
    fig.suptitle(label(title, 120))
    return _png(fig)


def bounded_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mixture rows cut to MAX_DOMAINS: the largest by input or output share, then one
    "other" row (shares summed, long-token fractions weighted by tokens)."""
    weights = {r["domain"]: max(r["input_share"] or 0, r["output_share"] or 0) for r in rows}
    top, rest = split_top(weights)
    if not rest:
        return rows
    keep = set(top)
    others = [r for r in rows if r["domain"] not in keep]
    other = {"domain": other_label(rest)}
    for side in ("input", "output"):
        other[f"{side}_share"] = sum(r[f"{side}_share"] or 0 for r in others)
        other[f"{side}_long"] = _weighted(others, f"{side}_long", f"{side}_tokens")
    return [r for r in rows if r["domain"] in keep] + [other]


def mixture_rows(build: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-domain before/after-mixing numbers from a data build manifest.

    Shares are each domain's tokens over the sum across domains, on each side, so input and
    output shares are comparable even when the output repeats documents.
    """
    inp = build.get("input") or {}
    out = build.get("domains") or {}
    names = list(inp) + [n for n in out if n not in inp]
    in_total = sum(_num((inp.get(n) or {}).get("tokens")) or 0 for n in names)
    out_total = sum(_num((out.get(n) or {}).get("tokens")) or 0 for n in names)
    target_total = sum(_num((out.get(n) or {}).get("target_tokens")) or 0 for n in names)
    rows = []
    for n in names:
        i, o = inp.get(n) or {}, out.get(n) or {}
        it, ot = _num(i.get("tokens")), _num(o.get("tokens"))
        tt = _num(o.get("target_tokens"))
        rows.append(
            {
                "domain": n,
                "input_docs": i.get("docs"),
                "input_tokens": i.get("tokens"),
                "input_share": it / in_total if it is not None and in_total else None,
                "input_long": _num(i.get("long_token_fraction")),
                "estimated": bool(i.get("estimated")),
                "target_tokens": o.get("target_tokens"),
                "target_share": tt / target_total if tt is not None and target_total else None,
                "output_tokens": o.get("tokens"),
                "output_share": ot / out_total if ot is not None and out_total else None,
                "output_long": _num(o.get("long_token_fraction")),
            }
        )
    return rows
