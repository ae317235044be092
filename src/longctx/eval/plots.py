"""Figures for the eval stage: the paper-style needle heatmap and loss by position/domain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from longctx.plotting import label, split_top, verbatim

# gkamradt / the paper's heatmap colours: red (miss) -> yellow -> green (hit)
NEEDLE_COLORS = ["#F0496E", "#EBB839", "#0CD79F"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt_len(n: int) -> str:
    return (
        f"{n / 1000:.0f}K"
        if n >= 1000 and n % 1000 == 0
        else (f"{n / 1024:.0f}K" if n % 1024 == 0 else f"{n / 1000:.1f}K" if n >= 1000 else str(n))
    )


def trained_line_x(lengths: list[int], trained: int) -> float:
    """x position (in column units, cells centred on integers) of the trained-length line:
    interpolated between the columns around it, clamped to the plot's edges."""
    ls = list(lengths)
    if trained <= ls[0]:
        return -0.5
    if trained >= ls[-1]:
        return len(ls) - 0.5
    return float(np.interp(trained, ls, np.arange(len(ls))))


@verbatim
def plot_needle_heatmap(result: dict[str, Any], path: str | Path) -> Path:
    """Depth (rows, 0% at top) x length (columns) heatmap of the headline score, 0..1."""
    from matplotlib.colors import LinearSegmentedColormap

    plt = _pyplot()
    lengths = sorted({int(c["length"]) for c in result["cells"]})
    depths = sorted({int(c["depth"]) for c in result["cells"]})
    grid = np.full((len(depths), len(lengths)), np.nan)
    for c in result["cells"]:
        grid[depths.index(int(c["depth"])), lengths.index(int(c["length"]))] = c["score"]
    cmap = LinearSegmentedColormap.from_list("needle", NEEDLE_COLORS)
    width = min(18.0, max(7.0, 3.0 + 0.45 * len(lengths)))
    fig, ax = plt.subplots(figsize=(width, 1.6 + 0.45 * len(depths)))
    im = ax.imshow(grid, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(lengths)), [_fmt_len(x) for x in lengths], rotation=45, ha="right")
    ax.set_yticks(range(len(depths)), [f"{d}%" for d in depths])
    trained = result.get("trained_length")
    xlabel = "context length (tokens)"
    if trained:
        xlabel += f"   (dashed line: trained length {int(trained):,})"
    ax.set_xlabel(xlabel)
    ax.set_ylabel("needle depth")
    ax.set_xticks(np.arange(-0.5, len(lengths)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(depths)), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    if trained:
        ax.axvline(
            trained_line_x(lengths, int(trained)), color="white", linestyle="--", linewidth=2.0
        )
    fig.colorbar(im, ax=ax, label=result.get("headline", "score"))
    ax.set_title(
        f"{label(Path(str(result.get('model', ''))).name)} · {label(result.get('needle'))} "
        f"needle · average {label(result.get('headline'))} = {result['average']:.3f}",
        fontsize=10,
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_domains(result: dict[str, Any]) -> tuple[list[str], int]:
    """(domains to draw, sorted; how many are left out): the most scored tokens first."""
    counts = (result.get("tokens") or {}).get("domains") or {}
    weights = {d: sum(v for v in (counts.get(d) or {}).values() if isinstance(v, (int, float)))
               for d in result["domains"]}
    top, rest = split_top(weights)
    return sorted(top), len(rest)


@verbatim
def plot_loss(result: dict[str, Any], path: str | Path) -> Path:
    """Left: per-domain loss in each position bucket (at most MAX_DOMAINS domains, the most
    scored); right: Loss@position."""
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    domains, left_out = loss_domains(result)
    buckets = list(result["buckets"])
    width = 0.8 / max(1, len(buckets))
    x = np.arange(len(domains))
    for k, b in enumerate(buckets):
        vals = [result["domains"][d].get(b) for d in domains]
        a1.bar(x + k * width, [np.nan if v is None else v for v in vals], width, label=label(b))
    a1.set_xticks(x + width * (len(buckets) - 1) / 2, [label(d) for d in domains], rotation=30,
                  ha="right")
    a1.set_ylabel("mean token loss (nats)")
    more = f" ({left_out:,} smaller domains not shown)" if left_out else ""
    a1.set_title(f"per-domain loss by position bucket{more}")
    a1.legend(title="positions", fontsize=8)
    pos = [(int(p), v) for p, v in result["positions"].items() if v is not None]
    if pos:
        px, py = zip(*sorted(pos), strict=True)
        a2.plot(px, py, marker="o")
        a2.set_xscale("log", base=2)
    a2.set_xlabel("position in document (tokens)")
    a2.set_ylabel("mean token loss (nats)")
    a2.set_title("Loss@position")
    a2.grid(alpha=0.3)
    fig.suptitle(label(Path(str(result.get("model", ""))).name, 80))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
