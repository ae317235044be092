"""Every figure kind drawn once (eval stages and the report), and their plain-text labels.

Domain names come from the corpus or from folders a user received: matplotlib would read
``$...$`` in them as math text (and crash on an unknown command), a lone surrogate crashes
the font renderer, and 30,000 of them take minutes to lay out. So every figure draws text
verbatim (:func:`plain_text`), labels go through :func:`label`, and at most
``MAX_DOMAINS`` domains are drawn (:func:`split_top`; the rest are summed as "other").
The needle and RULER heatmaps and the loss figure are drawn here, from the stage's JSON,
for both the stage's own PNG and the report's redraw (same colours, same trained-length
line); they tolerate the malformed values a report reads from folders it received. Only matplotlib and
numpy: no stage code, so the report may import it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# usetex would hand names to LaTeX ($, _, % break it); parse_math reads $...$ as math text.
PLAIN_TEXT = {"text.usetex": False, "text.parse_math": False}
MAX_DOMAINS = 30
LABEL_CHARS = 40
# gkamradt / the paper's heatmap colours: red (miss) -> yellow -> green (hit)
NEEDLE_COLORS = ["#F0496E", "#EBB839", "#0CD79F"]


def plain_text() -> AbstractContextManager[Any]:
    """A context in which every Text created (tick labels drawn at savefig too) is verbatim."""
    import matplotlib

    return matplotlib.rc_context(PLAIN_TEXT)


def verbatim(fn: F) -> F:
    """Decorator: the figure function runs (and saves) inside :func:`plain_text`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with plain_text():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def label(name: Any, width: int = LABEL_CHARS) -> str:
    """A drawable label: lone surrogates and control characters escaped, cut to ``width``."""
    s = str(name).encode("utf-8", "backslashreplace").decode("utf-8")
    if not s.isprintable():
        s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
    return s if len(s) <= width else s[: width - 1] + "…"


def split_top(weights: Mapping[str, float], limit: int = MAX_DOMAINS) -> tuple[list[str], list[str]]:
    """(names to draw, names folded into "other"): all of them when they fit in ``limit``
    rows, else the ``limit - 1`` heaviest (kept in their given order) and the rest."""
    names = list(weights)
    if len(names) <= limit:
        return names, []
    ranked = sorted(names, key=lambda n: (-_weight(weights[n]), n))
    top = set(ranked[: max(1, limit - 1)])
    return [n for n in names if n in top], [n for n in names if n not in top]


def other_label(rest: list[str]) -> str:
    return f"other ({len(rest):,} domains)"


def _weight(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0.0
    return v if v == v and abs(v) != float("inf") else 0.0


def finite(x: Any) -> float | None:
    """A finite float or None (JSON null, NaN, booleans and strings become gaps)."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def new_figure(figsize: tuple[float, float], dpi: float | None = None) -> Any:
    """A matplotlib Figure with an Agg canvas and no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


@verbatim
def png_bytes(fig: Any, dpi: float = 100) -> bytes:
    """The figure as PNG bytes, cropped to its content (text drawn verbatim)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


@verbatim
def save_png(fig: Any, path: Any, dpi: float = 110) -> Any:
    """Write the figure to ``path`` as PNG (text drawn verbatim); returns the Path."""
    from pathlib import Path

    path = Path(path)
    fig.savefig(path, format="png", dpi=dpi)
    return path


def fmt_length(n: int) -> str:
    """Context-length tick labels: 2000 -> 2K, 2048 -> 2K, 1500 -> 1.5K, 512 -> 512."""
    if n >= 1000 and n % 1000 == 0:
        return f"{n / 1000:.0f}K"
    if n % 1024 == 0:
        return f"{n / 1024:.0f}K"
    return f"{n / 1000:.1f}K" if n >= 1000 else str(n)


def trained_line_x(lengths: list[int], trained: float) -> float:
    """x position (in column units, cells centred on integers) of the trained-length line:
    interpolated between the columns around it, clamped to the plot's edges."""
    import numpy as np

    ls = list(lengths)
    if trained <= ls[0]:
        return -0.5
    if trained >= ls[-1]:
        return len(ls) - 0.5
    return float(np.interp(trained, ls, np.arange(len(ls))))


def needle_cmap() -> Any:
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("needle", NEEDLE_COLORS)


def needle_grid(result: Mapping[str, Any]) -> tuple[list[int], list[float], Any]:
    """(lengths, depths, depth x length array of scores, NaN where missing) of a needle.json;
    cells without a numeric length, depth or score are left out."""
    import numpy as np

    cells = [c for c in result.get("cells") or [] if isinstance(c, dict)]
    cells = [c for c in cells if finite(c.get("length")) is not None
             and finite(c.get("depth")) is not None]
    lengths = sorted({int(float(c["length"])) for c in cells})
    depths = sorted({float(c["depth"]) for c in cells})
    grid = np.full((len(depths), len(lengths)), np.nan)
    for c in cells:
        score = finite(c.get("score"))
        if score is not None:
            grid[depths.index(float(c["depth"])), lengths.index(int(float(c["length"])))] = score
    return lengths, depths, grid


def draw_needle(ax: Any, result: Mapping[str, Any]) -> Any:
    """The needle heatmap on ``ax``: depth (rows, 0% at top) x length (columns), score 0..1,
    white grid, dashed white line at the trained length. Returns the image (for a colorbar),
    or None when there are no cells."""
    lengths, depths, grid = needle_grid(result)
    ax.set_ylabel("needle depth")
    return draw_length_heatmap(ax, grid, lengths, [f"{d:g}%" for d in depths],
                               finite(result.get("trained_length")), vmax=1.0)


def draw_length_heatmap(
    ax: Any, grid: Any, lengths: list[int], rows: list[str], trained: float | None, vmax: float,
    annotate: bool = False,
) -> Any:
    """A rows x length score heatmap on ``ax`` (the needle's colours, 0..``vmax``), white
    grid, dashed white line at the trained length, each cell's value written in it when
    ``annotate``. Returns the image (for a colorbar), or None when there are no lengths."""
    import numpy as np

    xlabel = "context length (tokens)"
    if trained:
        xlabel += f"   (dashed line: trained length {int(trained):,})"
    ax.set_xlabel(xlabel)
    if not lengths:
        return None
    im = ax.imshow(grid, cmap=needle_cmap(), vmin=0.0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(lengths)), [fmt_length(x) for x in lengths], rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xticks(np.arange(-0.5, len(lengths)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(rows)), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    if annotate:
        for (r, c), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=8)
    if trained:
        ax.axvline(trained_line_x(lengths, trained), color="white", linestyle="--", linewidth=2.0)
    return im


def _model_name(result: Mapping[str, Any]) -> str:
    from pathlib import Path

    return Path(str(result.get("model", ""))).name


@verbatim
def needle_figure(result: Mapping[str, Any], title: str | None = None) -> Any:
    """The paper-style needle heatmap of one needle.json. ``title`` defaults to the model
    and needle; the average of the headline scorer is appended."""
    lengths, depths, _ = needle_grid(result)
    width = min(18.0, max(7.0, 3.0 + 0.45 * len(lengths)))
    fig = new_figure((width, 1.6 + 0.45 * max(1, len(depths))))
    ax = fig.add_subplot(1, 1, 1)
    im = draw_needle(ax, result)
    if im is not None:
        fig.colorbar(im, ax=ax, label=label(result.get("headline") or "score"))
    if title is None:
        title = f"{label(_model_name(result))} · {label(result.get('needle'))} needle"
    else:
        title = label(title, 120)
    avg = finite(result.get("average"))
    if avg is not None:
        title += f" · average {label(result.get('headline') or 'score')} = {avg:.3f}"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def ruler_grid(result: Mapping[str, Any]) -> tuple[list[int], list[str], Any]:
    """(lengths, row names, rows x length array of RULER scores 0..100, NaN where missing) of
    a ruler.json: one row per task, then the per-length average over tasks."""
    import numpy as np

    lengths = sorted({int(v) for v in result.get("lengths") or [] if finite(v) is not None})
    scores = result.get("task_scores") if isinstance(result.get("task_scores"), Mapping) else {}
    averages = result.get("length_averages")
    rows = [(str(t), s) for t, s in scores.items() if isinstance(s, Mapping)]
    if isinstance(averages, Mapping):
        rows.append(("average", averages))
    grid = np.full((len(rows), len(lengths)), np.nan)
    for r, (_, by_len) in enumerate(rows):
        for c, n in enumerate(lengths):
            v = finite(by_len.get(str(n)))
            if v is not None:
                grid[r, c] = v
    return lengths, [label(name) for name, _ in rows], grid


@verbatim
def ruler_figure(result: Mapping[str, Any], title: str | None = None) -> Any:
    """RULER's task x length table as a heatmap of one ruler.json (scores written in the
    cells), the per-length average over tasks as the last row; the overall average is
    appended to the title."""
    lengths, rows, grid = ruler_grid(result)
    width = min(18.0, max(7.0, 4.0 + 0.8 * len(lengths)))
    fig = new_figure((width, 1.6 + 0.38 * max(1, len(rows))))
    ax = fig.add_subplot(1, 1, 1)
    im = draw_length_heatmap(ax, grid, lengths, rows, finite(result.get("trained_length")),
                             vmax=100.0, annotate=True)
    ax.set_ylabel("RULER task")
    if im is not None:
        fig.colorbar(im, ax=ax, label="RULER score (0..100)")
    if im is not None and len(rows) > 1 and rows[-1] == "average":
        ax.axhline(len(rows) - 1.5, color="black", linewidth=1.5)  # tasks | average
    title = f"{label(_model_name(result))} · RULER" if title is None else label(title, 120)
    avg = finite(result.get("average"))
    if avg is not None:
        title += f" · average over lengths = {avg:.2f}"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def loss_domains(result: Mapping[str, Any]) -> tuple[list[str], int]:
    """(domains to draw, sorted; how many are left out): those with the most scored tokens."""
    counts = (result.get("tokens") or {}).get("domains") or {}
    weights = {}
    for d in result.get("domains") or {}:
        c = counts.get(d) if isinstance(counts, dict) else None
        weights[d] = sum(finite(v) or 0 for v in c.values()) if isinstance(c, dict) else 0
    top, rest = split_top(weights)
    return sorted(top), len(rest)


def short_domain(name: str) -> str:
    """RedPajamaCommonCrawl -> CommonCrawl: keeps axis labels readable."""
    return name[len("RedPajama") :] if name.startswith("RedPajama") and len(name) > 9 else name


@verbatim
def loss_figure(result: Mapping[str, Any], title: str | None = None) -> Any:
    """Left: per-domain loss in each position bucket (Table 5 view; at most MAX_DOMAINS
    domains, the most scored); right: Loss@position (Fig. 3 view). ``title`` defaults to
    the model's name."""
    import numpy as np

    fig = new_figure((12, 4.2))
    a1, a2 = fig.subplots(1, 2)
    domains, left_out = loss_domains(result)
    buckets = [b for b in result.get("buckets") or [] if isinstance(b, str)]
    per = result.get("domains") if isinstance(result.get("domains"), dict) else {}
    width = 0.8 / max(1, len(buckets))
    x = np.arange(len(domains))
    for k, b in enumerate(buckets):
        vals = [finite((per.get(d) or {}).get(b)) if isinstance(per.get(d), dict) else None
                for d in domains]
        a1.bar(x + k * width, [np.nan if v is None else v for v in vals], width, label=label(b))
    a1.set_xticks(x + width * (len(buckets) - 1) / 2, [label(short_domain(d)) for d in domains],
                  rotation=30, ha="right")
    a1.set_ylabel("mean token loss (nats)")
    more = f" ({left_out:,} smaller domains not shown)" if left_out else ""
    a1.set_title(f"per-domain loss by position bucket{more}")
    if buckets:
        a1.legend(title="positions", fontsize=8)
    positions = result.get("positions") if isinstance(result.get("positions"), dict) else {}
    pos = sorted((int(p), finite(v)) for p, v in positions.items() if str(p).isdigit())
    pos = [(p, v) for p, v in pos if v is not None]
    if pos:
        px, py = zip(*pos, strict=True)
        a2.plot(px, py, marker="o")
        a2.set_xscale("log", base=2)
    a2.set_xlabel("position in document (tokens)")
    a2.set_ylabel("mean token loss (nats)")
    a2.set_title("Loss@position")
    a2.grid(alpha=0.3)
    fig.suptitle(label(_model_name(result), 80) if title is None else label(title, 120))
    fig.tight_layout()
    return fig


def _bins(d: Mapping[str, Any]) -> list[float] | None:
    b = d.get("length_bins")
    if not isinstance(b, list) or not b:
        return None
    vals = [finite(x) for x in b]
    return None if any(v is None for v in vals) else vals  # type: ignore[return-value]


def _stats_entry(d: Mapping[str, Any]) -> dict[str, Any]:
    return {"tokens": finite(d.get("tokens")) or 0.0,
            "token_share": finite(d.get("token_share")) or 0.0,
            "long_token_fraction": finite(d.get("long_token_fraction")),
            "length_bins": _bins(d)}


def _merge_domains(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One "other" entry: shares summed, fractions and length bins weighted by tokens."""
    tokens = sum(d["tokens"] for d in entries)
    w = [d["tokens"] / tokens if tokens else 1 / len(entries) for d in entries]
    longs = [(x, d["long_token_fraction"]) for x, d in zip(w, entries, strict=True)
             if d["long_token_fraction"] is not None]
    wl = sum(x for x, _ in longs)
    bins = [d["length_bins"] for d in entries]
    same = bins[0] is not None and all(b is not None and len(b) == len(bins[0]) for b in bins)
    return {
        "tokens": tokens,
        "token_share": sum(d["token_share"] for d in entries),
        "long_token_fraction": sum(x * v for x, v in longs) / wl if wl else None,
        "length_bins": [sum(x * b[k] for x, b in zip(w, bins, strict=True))
                        for k in range(len(bins[0]))] if same else None,
    }


def stats_rows(stats: Mapping[str, Any], limit: int = MAX_DOMAINS) -> list[tuple[str, dict[str, Any]]]:
    """(label, numbers) per bar of the stats figure: every domain when they fit in ``limit``
    rows, else the largest by tokens and one "other" row merging the rest. Values that are
    not numbers become 0 (tokens, shares) or None (long-token fraction, length bins)."""
    raw = stats.get("domains") if isinstance(stats.get("domains"), dict) else {}
    domains = {n: _stats_entry(d) for n, d in raw.items() if isinstance(d, dict)}
    top, rest = split_top({n: d["tokens"] for n, d in domains.items()}, limit)
    rows = [(label(n), domains[n]) for n in top]
    if rest:
        rows.append((other_label(rest), _merge_domains([domains[n] for n in rest])))
    return rows


def _k(n: float) -> str:
    n = int(n)
    return f"{n // 1024}K" if n >= 1024 else str(n)


@verbatim
def stats_figure(stats: Mapping[str, Any], dpi: float = 100, title: str | None = None) -> Any:
    """The paper's Fig. 2 view of a stats.json (1300x460 px at dpi 100, taller past 14
    domains): domain token shares, and per domain the token share by document length with
    the long-token fraction marked (red line; docs >= the threshold are right of it).
    ``title`` defaults to the corpus's token and domain counts."""
    import matplotlib
    import numpy as np

    rows = stats_rows(stats)[::-1]  # largest on top
    names = [n for n, _ in rows]
    ys = np.arange(len(rows))
    thr = finite(stats.get("long_threshold"))
    fig = new_figure((13, max(4.6, 1.0 + 0.25 * len(rows))), dpi=dpi)  # grows past 14 rows
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    shares = [d["token_share"] for _, d in rows]
    ax1.barh(ys, shares, color="#4c72b0")
    ax1.set_yticks(ys, names)
    for y, s in enumerate(shares):
        ax1.text(s, y, f" {s:.1%}", va="center", fontsize=8)
    ax1.set_xlabel("share of corpus tokens")
    ax1.set_xlim(0, max(shares + [0.01]) * 1.25)
    ax1.set_title("domain token shares")

    nbins = max((len(d["length_bins"]) for _, d in rows if d["length_bins"]), default=0)
    edges = [finite(e) for e in stats.get("length_bin_edges") or []]
    if len(edges) == nbins and all(e is not None for e in edges):
        labels = [_k(e) + ("+" if i == len(edges) - 1 else f"–{_k(edges[i + 1])}")
                  for i, e in enumerate(edges)]
    else:
        labels = [f"bin {i}" for i in range(nbins)]
    cmap = matplotlib.colormaps["viridis"]
    left = np.zeros(len(rows))
    for b in range(nbins):
        vals = np.asarray([d["length_bins"][b] if d["length_bins"] and len(d["length_bins"]) > b
                           else 0.0 for _, d in rows])
        ax2.barh(ys, vals, left=left, color=cmap(b / max(1, nbins - 1)), label=labels[b])
        left += vals
    for y, (_, d) in enumerate(rows):
        ltf = d["long_token_fraction"]
        if ltf is None:
            continue
        if not d["length_bins"]:  # no length profile: the long share alone
            ax2.barh([y], [ltf], left=[1 - ltf], color="#b0b0b0")
        ax2.plot([1 - ltf] * 2, [y - 0.4, y + 0.4], color="red", lw=2)
        ax2.text(1.01, y, f"{ltf:.0%}", va="center", fontsize=8)
    ax2.set_xlim(0, 1.1)
    thr_text = f"{int(thr):,}" if thr is not None else "the threshold"
    ax2.set_xlabel(f"share of domain tokens by document length (red: docs ≥ {thr_text} tokens, "
                   "right of line)")
    ax2.set_yticks(ys, [""] * len(rows))
    ax2.set_title("token share by document length")
    if nbins:
        ax2.legend(fontsize=7, ncol=1, loc="center left", bbox_to_anchor=(1.08, 0.5),
                   title="tokens")
    if title is None:
        total = finite(stats.get("total_tokens"))
        total_text = f"{int(total):,}" if total is not None else "?"
        n_domains = len(stats.get("domains") or {})
        sampled = " (sampled)" if stats.get("sampled") else ""
        title = f"{total_text} tokens, {n_domains:,} domains{sampled}"
    fig.suptitle(label(title, 120))
    longest = max((len(n) for n in names), default=8)
    left_margin = min(0.35, 0.03 + 0.0068 * longest)  # room for the domain names at fontsize 10
    fig.subplots_adjust(left=left_margin, right=0.86, bottom=0.14, top=0.85, wspace=0.08)
    return fig


@verbatim
def eval_during_training_figure(evals: list[Mapping[str, Any]], title: str | None = None) -> Any:
    """``train --eval-every``: held-out loss per position bucket (key-token loss dashed) and
    the needle score against steps, with tokens on the top axis. ``evals`` are the cleaned
    records of :func:`longctx.report.collect.eval_records` (step, tokens, loss_by_bucket,
    key_loss_by_bucket, needle)."""
    fig = new_figure((12, 4.2))
    a1, a2 = fig.subplots(1, 2)
    buckets: list[str] = []
    for e in evals:
        buckets += [b for b in e["loss_by_bucket"] if b not in buckets]
    for part, style, what in (("loss_by_bucket", "-", ""), ("key_loss_by_bucket", "--", "key ")):
        for b in buckets[:MAX_DOMAINS]:
            pts = [(e["step"], (e[part] or {}).get(b)) for e in evals
                   if (e[part] or {}).get(b) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                a1.plot(xs, ys, style, marker="o", ms=3, label=label(f"{what}{b}"))
    a1.set_ylabel("mean token loss (nats)")
    a1.set_title("held-out loss by position")
    if a1.lines:
        a1.legend(title="positions", fontsize=8)
    pts = [(e["step"], e["needle"]) for e in evals if e["needle"] is not None]
    if pts:
        xs, ys = zip(*pts, strict=True)
        a2.plot(xs, ys, marker="s", ms=4, color="#0CD79F")
    a2.set_ylim(-0.05, 1.05)
    a2.set_ylabel("needle score (grid average)")
    a2.set_title("needle grid" if pts else "needle grid (not evaluated)")
    rates = [e["tokens"] / e["step"] for e in evals if e["tokens"] and e["step"] > 0]
    for ax in (a1, a2):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if rates and rates[-1] > 0:  # tokens per step is fixed within one run
            r = rates[-1]
            top = ax.secondary_xaxis("top", functions=(lambda s, r=r: s * r,
                                                       lambda t, r=r: t / r))
            top.set_xlabel("tokens")
    fig.suptitle("evaluation during training" if title is None else label(title, 120))
    fig.tight_layout()
    return fig
