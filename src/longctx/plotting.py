"""Plain-text labels and bounded domain lists for every figure (data stats, eval, report).

Domain names come from the corpus or from folders a user received: matplotlib would read
``$...$`` in them as math text (and crash on an unknown command), a lone surrogate crashes
the font renderer, and 30,000 of them take minutes to lay out. So every figure draws text
verbatim (:func:`plain_text`), labels go through :func:`label`, and at most
``MAX_DOMAINS`` domains are drawn (:func:`split_top`; the rest are summed as "other").
Pure helpers on matplotlib's rc settings: no stage code, so the report may import it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# usetex would hand names to LaTeX ($, _, % break it); parse_math reads $...$ as math text.
PLAIN_TEXT = {"text.usetex": False, "text.parse_math": False}
MAX_DOMAINS = 30
LABEL_CHARS = 40


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
