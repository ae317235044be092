"""Chunked cross-entropy: the LM head and the loss, ``chunk`` tokens at a time.

Full-vocabulary logits for a 64K sequence with a 128K vocabulary are 32 GB in fp32. Here each
chunk's logits are computed, reduced to a loss and dropped; the backward pass recomputes them
(``torch.utils.checkpoint``), so only one chunk of logits exists at any moment. Training
sums the losses (:func:`chunked_cross_entropy`); evaluation keeps one loss per token
(:func:`chunked_token_losses`) through the same head-and-loss step.

:func:`fused_cross_entropy` (``ce_impl: fused``) skips the recompute: each chunk's gradients
(softmax minus one-hot, times the head) are computed in the forward, right after its loss, and
the backward only scales them. :func:`longctx.train.fastpaths.liger_cross_entropy`
(``ce_impl: liger``) hands the same job to Liger-Kernel's Triton kernel (CUDA only).
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


def fused_cross_entropy(hidden: Any, weight: Any, targets: Any, chunk: int) -> tuple[Any, Any]:
    """:func:`chunked_cross_entropy` with the gradient computed in the forward (no recompute).

    Same value and gradients; the logits of a chunk live only while that chunk is processed.
    The matmuls run in the dtype the chunked path's ``hidden @ weight.t()`` would use (the
    autocast dtype under autocast, else the operands'), the softmax and both gradient
    accumulators in fp32. Saved for backward: the gradient w.r.t. ``hidden`` in ``hidden``'s
    dtype and the one w.r.t. ``weight`` in ``weight``'s dtype (accumulated in fp32 over the
    chunks, cast once). Without grad (eval) only the loss is computed.
    """
    import torch

    if not torch.is_grad_enabled() or not (hidden.requires_grad or weight.requires_grad):
        return chunked_cross_entropy(hidden, weight, targets, chunk)
    count = (targets != IGNORE).sum()
    return _fused_function().apply(hidden, weight, targets, chunk), count


_FUSED: Any = None


def _fused_function() -> Any:
    """The autograd Function of :func:`fused_cross_entropy` (built lazily: no torch import)."""
    global _FUSED
    if _FUSED is not None:
        return _FUSED
    import torch

    class _FusedLinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, targets: Any, chunk: int) -> Any:
            device = hidden.device.type
            mm_dtype = (torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device)
                        else torch.promote_types(hidden.dtype, weight.dtype))
            h = hidden.reshape(-1, hidden.shape[-1])
            t = targets.reshape(-1)
            n = h.shape[0]
            step = chunk if 0 < chunk < n else max(n, 1)
            w = weight.to(mm_dtype)
            grad_h = torch.empty_like(h)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            with torch.autocast(device, enabled=False):
                for start in range(0, n, step):
                    hs = h[start : start + step].to(mm_dtype)
                    ts = t[start : start + step]
                    scored = ts != IGNORE
                    safe = torch.where(scored, ts, 0)
                    logits = (hs @ w.t()).float()
                    picked = logits.gather(1, safe[:, None]).squeeze(1)
                    top = logits.amax(dim=-1, keepdim=True)
                    grad = logits.sub_(top).exp_()  # in place: one chunk x vocab buffer
                    norm = grad.sum(dim=-1, keepdim=True)
                    lse = (top + norm.log()).squeeze(1)
                    total += torch.where(scored, lse - picked, 0.0).sum()
                    # d(sum of losses)/d(logits) = softmax - onehot on scored rows, 0 elsewhere
                    grad.div_(norm)
                    grad[torch.arange(len(ts), device=grad.device), safe] -= 1.0
                    grad.mul_(scored[:, None])
                    g = grad.to(mm_dtype)
                    grad_h[start : start + step] = (g @ w).to(h.dtype)
                    grad_w += (g.t() @ hs).float()
            ctx.save_for_backward(grad_h.reshape(hidden.shape), grad_w.to(weight.dtype))
            return total

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> Any:
            grad_h, grad_w = ctx.saved_tensors
            return grad_h * grad_out.to(grad_h.dtype), grad_w * grad_out.to(grad_w.dtype), None, None

    _FUSED = _FusedLinearCrossEntropy
    return _FUSED
