"""The report section of ``longctx ablate``, drawn from ``ablation.json`` only.

The paper's views of an ablation: Table 5 (first arm's per-domain loss, the others as
differences), Fig. 3 (Loss@position of every arm on one plot), Fig. 4 (needle heatmaps side
by side), plus each arm's domain and long-token shares and one verdict per arm. A difference
is highlighted only when ``ablation.json`` says it beats the measured noise (seed spread, or
bootstrap intervals with one seed): the paper's fixed 0.01 is not used here, because at small
scale the seed-to-seed noise is often larger than that.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from longctx.plotting import draw_needle, new_figure
from longctx.report import plots
from longctx.report.markup import esc, fmt, img, pct, signed, table

ABLATION_FILE = "ablation.json"


def load_ablation(root: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(ablation.json content, None), (None, a warning) when unreadable, or (None, None)."""
    path = Path(root) / ABLATION_FILE
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, f"{path}: unreadable ({e})"
    if not isinstance(data, dict) or data.get("stage") != "ablate" or not isinstance(
            data.get("arms"), dict) or not data["arms"]:
        return None, f"{path}: not an ablation result"
    return data, None


# ------------------------------------------------------------------------------ plots


def _mean(stat: Any) -> float | None:
    return plots._num(stat.get("mean")) if isinstance(stat, dict) else None


def positions_plot(ab: dict[str, Any]) -> bytes:
    """Loss@position of every arm (mean over seeds, bars min-max): the paper's Fig. 3 view."""
    fig = new_figure((7, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for name, arm in ab["arms"].items():
        pos = (arm["summary"].get("loss") or {}).get("positions") or {}
        pts = []
        for p, s in pos.items():
            m = _mean(s)
            if m is not None and str(p).isdigit():
                vals = s.get("values") or [m]
                pts.append((int(p), m, m - min(vals), max(vals) - m))
        pts.sort()
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                        yerr=[[p[2] for p in pts], [p[3] for p in pts]],
                        marker="o", ms=4, capsize=3, label=name)
    base = ((ab.get("base_model") or {}).get("loss") or {}).get("positions") or {}
    pts = sorted((int(p), v) for p, v in base.items()
                 if str(p).isdigit() and plots._num(v) is not None)
    if pts:
        ax.plot([p for p, _ in pts], [v for _, v in pts], ls="--", color="grey", marker="x",
                label="base model (as shipped)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("position (tokens)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Loss@position per arm (mean over seeds; bars: min–max)")
    return plots._png(fig)


def needle_grid(ab: dict[str, Any]) -> bytes:
    """One needle heatmap per arm, side by side (mean score over seeds): the Fig. 4 view."""
    arms = [(n, a["summary"].get("needle") or {}) for n, a in ab["arms"].items()]
    arms = [(n, s) for n, s in arms if s.get("cells")]
    keys = {k for _, s in arms for k in s["cells"]}
    lengths = sorted({int(k.split(":")[0]) for k in keys})
    depths = sorted({float(k.split(":")[1]) for k in keys})
    n = max(1, len(arms))
    fig = new_figure((max(4.0, 0.5 * len(lengths) + 2.2) * n, max(2.6, 0.35 * len(depths) + 1.6)))
    im = None
    for i, (name, s) in enumerate(arms):
        ax = fig.add_subplot(1, n, i + 1)
        cells = []
        for k, stat in s["cells"].items():
            L, d = k.split(":")
            cells.append({"length": int(L), "depth": float(d), "score": _mean(stat)})
        im = draw_needle(ax, {"cells": cells}) or im
        if i:
            ax.set_yticks(range(len(depths)), [])
            ax.set_ylabel("")
        avg = _mean(s.get("average"))
        ax.set_title(f"{name}: {avg:.3f}" if avg is not None else name, fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=fig.axes, label="score (mean over seeds)")
    return plots._png(fig)


def mixture_plot(ab: dict[str, Any]) -> bytes:
    """Token share and long-token share per domain, one bar per arm."""
    names = sorted({d for a in ab["arms"].values()
                    for d in (a["summary"]["build"].get("domains") or {})})
    fig = new_figure((10, 3.6))

    def series(key: str) -> dict[str, list[float | None]]:
        return {arm: [_mean(((a["summary"]["build"].get("domains") or {}).get(d) or {}).get(key))
                      for d in names] for arm, a in ab["arms"].items()}

    plots._bars(fig.add_subplot(1, 2, 1), names, series("share"), "share of tokens")
    plots._bars(fig.add_subplot(1, 2, 2), names, series("long_token_fraction"),
                "long-token share")
    fig.suptitle("mixture of each arm (mean over seeds)")
    return plots._png(fig)


def curves_plot(ab: dict[str, Any]) -> bytes:
    fig = new_figure((7, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    for name, a in ab["arms"].items():
        pts = [(r["step"], r["mean"]) for r in a["summary"]["train"].get("curve") or []
               if plots._num(r.get("mean")) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("training curves")
    return plots._png(fig)


# ------------------------------------------------------------------------------ tables


def _noise_note(diff: dict[str, Any]) -> str:
    if diff.get("noise") is None:
        return ' <span class="meta">(noise unknown)</span>'
    kind = {"seed spread": "±", "paired bootstrap 95%": "paired ±"}.get(
        diff.get("noise_kind"), "boot ±")
    return f' <span class="meta">({kind}{fmt(diff["noise"], 3)})</span>'


def diff_cell(diff: dict[str, Any] | None, lower_is_better: bool = True) -> Any:
    """A difference, coloured only when it beats the measured noise."""
    if not diff or diff.get("delta") is None:
        return ("–", "na")
    text = signed(diff["delta"]) + _noise_note(diff)
    if not diff.get("beyond"):
        return text
    better = diff["delta"] < 0 if lower_is_better else diff["delta"] > 0
    return (text, "better" if better else "worse")


def _abs_cell(stat: Any) -> str:
    m = _mean(stat)
    if m is None:
        return "–"
    spread = plots._num(stat.get("spread")) if stat.get("n", 0) > 1 else None
    note = f' <span class="meta">(spread {fmt(spread, 3)})</span>' if spread is not None else ""
    return fmt(m, 3) + note


def _table5(ab: dict[str, Any]) -> str:
    base = ab["baseline"]
    bl = ab["arms"][base]["summary"].get("loss") or {}
    if not bl:
        return ""
    domains = list((bl.get("domains") or {}).keys())
    parts = ["<h3>Per-domain loss against the first arm (the paper's Table 5 view)</h3>",
             f'<p class="meta">First row: mean loss of <b>{esc(base)}</b> over '
             f"{len(ab.get('seeds') or [])} seed(s); other rows: that arm's mean minus it. "
             "A cell is coloured only when the difference exceeds the measured noise "
             f"({esc(ab.get('noise_rule'))}); green: lower loss, red: higher. "
             "± is the noise each difference must beat.</p>"]
    base_model = (ab.get("base_model") or {}).get("loss") or {}
    for b in bl.get("buckets") or []:
        row = [f"{esc(base)} (first arm)"]
        row += [_abs_cell((bl["domains"].get(d) or {}).get(b)) for d in domains]
        row.append(_abs_cell((bl.get("overall") or {}).get(b)))
        rows = [row]
        for name, diffs in (ab.get("comparisons") or {}).items():
            rows.append([f"v.s. {esc(name)}"]
                        + [diff_cell((diffs["domains"].get(d) or {}).get(b)) for d in domains]
                        + [diff_cell((diffs.get("overall") or {}).get(b))])
        if base_model:
            rows.append(["base model (as shipped)"]
                        + [fmt(plots._num(((base_model.get("domains") or {}).get(d) or {})
                                          .get(b)), 3) for d in domains]
                        + [fmt(plots._num((base_model.get("overall") or {}).get(b)), 3)])
        parts.append(f"<h4>{esc(b)} tokens</h4>")
        parts.append(table(["context " + esc(b)] + [esc(plots._short(d)) for d in domains]
                           + ["overall"], rows, row_class=lambda r: "base" if r == 0 else ""))
    positions = list((bl.get("positions") or {}).keys())
    if positions:
        rows = [[f"{esc(base)} (first arm)"] + [_abs_cell(bl["positions"][p]) for p in positions]]
        for name, diffs in (ab.get("comparisons") or {}).items():
            rows.append([f"v.s. {esc(name)}"]
                        + [diff_cell((diffs.get("positions") or {}).get(p)) for p in positions])
        parts.append("<h4>Loss@position</h4>")
        parts.append(table(["arm"] + [f"@{esc(p)}" for p in positions], rows,
                           row_class=lambda r: "base" if r == 0 else ""))
    return "".join(parts)


def _mixture_tables(ab: dict[str, Any]) -> str:
    arms = ab["arms"]
    domains = sorted({d for a in arms.values() for d in (a["summary"]["build"].get("domains") or {})})
    rows = []
    for name, a in arms.items():
        bd = a["summary"]["build"]
        mix = a.get("mixture") or {}
        desc = ", ".join(f"{k}={v}" for k, v in mix.items())
        cells = []
        for d in domains:
            s = (bd.get("domains") or {}).get(d) or {}
            cells.append(f"{pct(_mean(s.get('share')))} / {pct(_mean(s.get('long_token_fraction')))}")
        rows.append([esc(name), esc(desc)] + cells + [pct(_mean(bd.get("long_token_fraction")))])
    return ("<h3>Mixture of each arm</h3><p class=\"meta\">token share / long-token share per "
            "domain (mean over seeds), from each build's manifest.</p>"
            + table(["arm", "mixture"] + [esc(plots._short(d)) for d in domains]
                    + ["long-token share (all)"], rows, left=2))


def _needle_table(ab: dict[str, Any]) -> str:
    rows = []
    base = ab["baseline"]
    for name, a in ab["arms"].items():
        s = a["summary"].get("needle") or {}
        if not s:
            continue
        diff = (ab.get("comparisons") or {}).get(name, {}).get("needle")
        rows.append([esc(name), _abs_cell(s.get("average")),
                     "first arm" if name == base else diff_cell(diff, lower_is_better=False)])
    base_needle = (ab.get("base_model") or {}).get("needle") or {}
    if rows and base_needle:
        rows.append(["base model (as shipped)", fmt(plots._num(base_needle.get("average")), 3),
                     "–"])
    if not rows:
        return ""
    return ("<h3>Needle in a haystack (the paper's Fig. 4 view)</h3>"
            + table(["arm", "average score", "vs first arm"], rows))


def ablation_section(ab: dict[str, Any]) -> tuple[str, int]:
    """The section's HTML (every string escaped) and the number of images in it."""
    cfg = ab.get("config") or {}
    held = ab.get("heldout") or {}
    parts = ["<h2>Ablation</h2><section class=card>"]
    parts.append(
        '<p class="meta">'
        f"model <b>{esc(cfg.get('model'))}</b>, arms {esc(', '.join(ab['arms']))}, "
        f"seeds {esc(', '.join(map(str, ab.get('seeds') or [])))}; evaluation rows: "
        f"<b>{esc(held.get('split'))}</b> ({esc(held.get('scored'))}, "
        f"{fmt(held.get('rows'))} rows of {fmt(held.get('seq_len'))} tokens, digest "
        f"{esc(held.get('digest'))})</p>")
    for w in ab.get("warnings") or []:
        parts.append(f'<p class="warn">{esc(w)}</p>')
    verdicts = ab.get("verdicts") or []
    if verdicts:
        parts.append("<h3>Verdicts</h3><ul>" + "".join(f"<li>{esc(v)}</li>" for v in verdicts)
                     + "</ul>")
    images = 0
    parts.append(_table5(ab))
    if any((a["summary"].get("loss") or {}).get("positions") for a in ab["arms"].values()):
        parts.append(img(positions_plot(ab), "Loss@position of every arm"))
        images += 1
    needle = _needle_table(ab)
    if needle:
        parts.append(needle)
        parts.append(img(needle_grid(ab), "needle heatmaps of every arm"))
        images += 1
    parts.append(_mixture_tables(ab))
    parts.append(img(mixture_plot(ab), "domain and long-token shares of every arm"))
    parts.append(img(curves_plot(ab), "training curves of every arm"))
    images += 2
    shared = [(f"build.{k}", v) for k, v in (cfg.get("build") or {}).items()]
    shared += [(f"train.{k}", v) for k, v in (cfg.get("train") or {}).items()]
    if shared:
        parts.append("<details><summary>settings shared by every arm</summary>"
                     + table(["key", "value"], [[esc(k), esc(v)] for k, v in shared], left=2)
                     + "</details>")
    parts.append("</section>")
    return "".join(parts), images
