"""CLI commands ``data demo-corpus`` and ``data stats`` (thin wrappers over data/ modules)."""

from __future__ import annotations


def demo_corpus_command() -> None:
    """Write the embedded demo corpus (not implemented yet)."""
    raise NotImplementedError


def stats_command() -> None:
    """Per-domain length statistics (not implemented yet)."""
    raise NotImplementedError
