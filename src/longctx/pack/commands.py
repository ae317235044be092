"""CLI commands ``data build`` and ``data export`` (thin wrappers over mix/ and pack/ modules)."""

from __future__ import annotations


def build_command() -> None:
    """Build a packed long-context mixture (not implemented yet)."""
    raise NotImplementedError


def export_command() -> None:
    """Export packed shards (not implemented yet)."""
    raise NotImplementedError
