"""``longctx report`` and ``longctx demo``."""

from __future__ import annotations


def report_command() -> None:
    """Write one self-contained HTML report from stage outputs (not implemented yet)."""
    raise NotImplementedError


def demo_command() -> None:
    """Run the whole pipeline on embedded defaults (not implemented yet)."""
    raise NotImplementedError
