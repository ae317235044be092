"""HTML primitives of the report: escaping, number formats, inline images and tables.

Every string that comes from a file goes through :func:`esc`; every cell of :func:`table`
is already-escaped HTML.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from longctx.report import plots


def esc(value: Any) -> str:
    """HTML-escape any value (quotes too, so it is safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def _num(x: Any) -> float | None:
    return plots._num(x)


def fmt(x: Any, digits: int = 4) -> str:
    """Numbers for tables: ints with separators, floats rounded, missing as an en dash."""
    if isinstance(x, bool):
        return esc(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "–"
        if x.is_integer() and abs(x) >= 1000:
            return f"{int(x):,}"
        return f"{x:.{digits}f}"
    if x is None:
        return "–"
    return esc(x)


def pct(x: Any) -> str:
    v = _num(x)
    return "–" if v is None else f"{100 * v:.1f}%"


def signed(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:+.{digits}f}"


def img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    left: int = 1,
    row_class: Callable[[int], str] | None = None,
) -> str:
    """A table whose cells are already-escaped HTML; the first ``left`` columns align left.

    A cell may be a ``(html, css_class)`` pair to colour it.
    """
    out = ["<table><thead><tr>"]
    out += [f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for r, row in enumerate(rows):
        cls = row_class(r) if row_class else ""
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        for i, cell in enumerate(row):
            klass = "l" if i < left else ""
            if isinstance(cell, tuple):
                cell, extra = cell
                klass = f"{klass} {extra}".strip()
            out.append(f'<td class="{klass}">{cell}</td>' if klass else f"<td>{cell}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)
