"""``longctx train``."""

from __future__ import annotations


def train_command() -> None:
    """Continually pretrain a causal LM on packed shards (not implemented yet)."""
    raise NotImplementedError
