"""Chunked cross-entropy: the LM head and the loss, ``chunk`` tokens at a time.

Full-vocabulary logits for a 64K sequence with a 128K vocabulary are 32 GB in fp32. Here each
chunk's logits are computed, reduced to a loss and dropped; the backward pass recomputes them
(``torch.utils.checkpoint``), so only one chunk of logits exists at any moment. Training
sums the losses (:func:`chunked_cross_entropy`); evaluation keeps one loss per token
(:func:`chunked_token_losses`) through the same head-and-loss step.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100


def _chunk_loss(hidden: Any, weight: Any, targets: Any, reduction: str = "sum") -> Any:
    import torch.nn.functional as F

    logits = (hidden @ weight.t()).float()
    return F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction=reduction)


def chunked_cross_entropy(hidden: Any, weight: Any, targets: Any, chunk: int) -> tuple[Any, Any]:
    """(sum of token losses, number of scored tokens) for ``hidden`` (B, L, H), ``targets`` (B, L).

    ``targets[b, t]`` is the id predicted from position t, or -100 to skip it. ``chunk=0``
    computes the whole sequence at once (reference path for tests).
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1)
    count = (t != IGNORE).sum()
    if chunk <= 0 or h.shape[0] <= chunk:
        return _chunk_loss(h, weight, t), count
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, h.shape[0], chunk):
        hs, ts = h[start : start + chunk], t[start : start + chunk]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, hs, weight, ts, use_reentrant=False)
        else:
            total = total + _chunk_loss(hs, weight, ts)
    return total, count


def chunked_token_losses(hidden: Any, weight: Any, targets: Any, chunk: int) -> Any:
    """Per-token losses (float32, shape of ``targets``) for ``hidden`` (..., H), ``targets`` (...).

    No gradient path: for evaluation under ``torch.inference_mode``. Ignored targets (-100)
    get loss 0. ``chunk=0`` computes the whole sequence at once.
    """
    import torch

    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1)
    if chunk <= 0 or h.shape[0] <= chunk:
        return _chunk_loss(h, weight, t, "none").reshape(targets.shape)
    parts = [
        _chunk_loss(h[start : start + chunk], weight, t[start : start + chunk], "none")
        for start in range(0, h.shape[0], chunk)
    ]
    return torch.cat(parts).reshape(targets.shape)
