"""Plots for the report, drawn from the stage JSON files (matplotlib, Agg, no pyplot state).

Stages write their own PNGs (stats.png, needle.png, loss.png); the report re-uses those and
draws only what is missing: the training curve, the before/after-mixing view of a build
manifest, and fallbacks for stage PNGs that are absent. Every function returns PNG bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from longctx.plotting import label, other_label, split_top, verbatim  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The needle heatmap colours of the paper's figures: red (miss) -> yellow -> green (hit).
NEEDLE_CMAP = LinearSegmentedColormap.from_list("needle", ["#F0496E", "#EBB839", "#0CD79F"])


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _num(x: Any) -> float | None:
    """A finite float or None (JSON null, NaN and strings become gaps)."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _short(name: str) -> str:
    """RedPajamaCommonCrawl -> CommonCrawl: keeps axis labels readable."""
    return name[len("RedPajama") :] if name.startswith("RedPajama") and len(name) > 9 else name


@verbatim
def training_curve(metrics: Sequence[dict[str, Any]], title: str = "training") -> bytes:
    """Loss (and held-out loss) per step; tokens/s on a second axis when logged."""
    fig = Figure(figsize=(7, 3.6))
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


@verbatim
def needle_heatmap(needle: dict[str, Any], title: str = "needle") -> bytes:
    """Depth (rows) x length (columns) heatmap with the average in the title, like the paper."""
    cells = [c for c in needle.get("cells", []) if isinstance(c, dict)]
    lengths = sorted({int(c["length"]) for c in cells if _num(c.get("length")) is not None})
    depths = sorted({float(c["depth"]) for c in cells if _num(c.get("depth")) is not None})
    grid = [[math.nan] * len(lengths) for _ in depths]
    for c in cells:
        s = _num(c.get("score"))
        if s is None or _num(c.get("length")) is None or _num(c.get("depth")) is None:
            continue
        grid[depths.index(float(c["depth"]))][lengths.index(int(c["length"]))] = s
    fig = Figure(figsize=(max(4.0, 0.6 * len(lengths) + 2.5), max(2.5, 0.35 * len(depths) + 1.5)))
    ax = fig.add_subplot(1, 1, 1)
    if lengths and depths:
        im = ax.imshow(grid, cmap=NEEDLE_CMAP, vmin=0, vmax=1, aspect="auto")
        fig.colorbar(im, ax=ax, label="score")
        ax.set_xticks(range(len(lengths)), [_k(n) for n in lengths], rotation=45)
        ax.set_yticks(range(len(depths)), [f"{d:g}%" for d in depths])
        trained = _num(needle.get("trained_length"))
        if trained is not None:
            # dashed line between the last length <= trained and the first one beyond it
            x = sum(1 for n in lengths if n <= trained) - 0.5
            if -0.5 < x < len(lengths) - 0.5:
                ax.axvline(x, color="white", ls="--", lw=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    avg = _num(needle.get("average"))
    title = label(title, 120)
    ax.set_title(f"{title}: average {avg:.3f}" if avg is not None else title)
    return _png(fig)


def _k(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


@verbatim
def loss_plot(loss: dict[str, Any], title: str = "loss") -> bytes:
    """Loss@position (Fig. 3 view) next to per-domain loss by bucket (Table 5 view); at most
    MAX_DOMAINS domains, those with the most scored tokens."""
    fig = Figure(figsize=(10, 3.8))
    ax1 = fig.add_subplot(1, 2, 1)
    pos = [(int(k), _num(v)) for k, v in (loss.get("positions") or {}).items() if k.isdigit()]
    pos = sorted((p, v) for p, v in pos if v is not None)
    if pos:
        ax1.plot([p for p, _ in pos], [v for _, v in pos], marker="o")
        ax1.set_xscale("log", base=2)
    ax1.set_xlabel("position (tokens)")
    ax1.set_ylabel("loss")
    ax1.set_title("Loss@position")
    ax1.grid(alpha=0.3)
    ax2 = fig.add_subplot(1, 2, 2)
    buckets = list(loss.get("buckets") or [])
    domains, left_out = _loss_domains(loss)
    width = 0.8 / max(1, len(buckets))
    for j, b in enumerate(buckets):
        vals = [_num((loss["domains"][d] or {}).get(b)) for d in domains]
        xs = [i + j * width for i in range(len(domains))]
        ax2.bar(xs, [v if v is not None else 0 for v in vals], width, label=label(b))
    ax2.set_xticks(
        [i + width * (len(buckets) - 1) / 2 for i in range(len(domains))],
        [label(_short(d)) for d in domains],
        rotation=30,
        ha="right",
    )
    ax2.set_ylabel("mean token loss")
    more = f" ({left_out:,} smaller domains not shown)" if left_out else ""
    ax2.set_title(f"per-domain loss by position bucket{more}")
    if buckets:
        ax2.legend(fontsize=8)
    fig.suptitle(label(title, 120))
    return _png(fig)


def _loss_domains(loss: dict[str, Any]) -> tuple[list[str], int]:
    """(domains to draw in their given order, how many are left out), by scored tokens."""
    counts = (loss.get("tokens") or {}).get("domains") or {}
    weights = {}
    for d in loss.get("domains") or {}:
        c = counts.get(d) if isinstance(counts, dict) else None
        weights[d] = sum(_num(v) or 0 for v in c.values()) if isinstance(c, dict) else 0
    top, rest = split_top(weights)
    return top, len(rest)


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


@verbatim
def stats_plot(stats: dict[str, Any], title: str = "corpus statistics") -> bytes:
    """Domain token shares and long-token fraction per domain (the paper's Fig. 2 view); at
    most MAX_DOMAINS bars, the smallest domains summed as "other"."""
    domains = {n: d for n, d in (stats.get("domains") or {}).items() if isinstance(d, dict)}
    top, rest = split_top({n: _num(d.get("tokens")) or 0 for n, d in domains.items()})
    names = list(top)
    shares = [_num(domains[n].get("token_share")) for n in top]
    longs = [_num(domains[n].get("long_token_fraction")) for n in top]
    if rest:
        names.append(other_label(rest))
        shares.append(sum(_num(domains[n].get("token_share")) or 0 for n in rest))
        longs.append(_weighted([domains[n] for n in rest], "long_token_fraction", "tokens"))
    fig = Figure(figsize=(10, 3.6))
    _bars(fig.add_subplot(1, 2, 1), names, {"token share": shares}, "share of tokens")
    thr = stats.get("long_threshold")
    _bars(fig.add_subplot(1, 2, 2), names, {f"tokens in docs >= {thr}": longs},
          "long-token fraction")
    fig.suptitle(label(title, 120))
    return _png(fig)


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
    fig = Figure(figsize=(10, 3.6))
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
