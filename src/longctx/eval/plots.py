"""Figures of the eval stage: the needle heatmap and loss by position/domain, drawn by
:mod:`longctx.plotting` (the same functions the report redraws with) and saved as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longctx.plotting import loss_figure, needle_figure, save_png


def plot_needle_heatmap(result: dict[str, Any], path: str | Path) -> Path:
    """Depth (rows, 0% at top) x length (columns) heatmap of the headline score, 0..1."""
    return save_png(needle_figure(result), path)


def plot_loss(result: dict[str, Any], path: str | Path) -> Path:
    """Per-domain loss in each position bucket next to Loss@position."""
    return save_png(loss_figure(result), path)
