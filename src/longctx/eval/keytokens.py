"""Key tokens (LongPPL, Fang et al., arXiv 2410.23771): targets the long context makes predictable.

Plain loss averages over every token, and most tokens are predicted as well from a few
thousand tokens of context as from the whole document, so it barely moves with long-context
ability. LongPPL keeps the tokens whose loss drops when the long context is present:

- LSD (long-short difference) = ``loss_short - loss_long`` > ``lsd`` (default 2 nats), and
- LCL (long-context log-likelihood) = ``-loss_long`` > ``lcl`` (default -2, i.e.
  ``loss_long`` < 2): the model does predict the token with the long context.

``loss_long`` is the loss with the full context; ``loss_short`` the loss with only the last
``context`` tokens (K, default 4096). As in the paper's released code, short losses come from
windows of ``context + stride`` tokens advanced by ``stride`` (default 1024): each window
scores its last ``stride`` targets, so a target's short context holds K to K + stride - 1
tokens (``stride=1`` gives exactly K). A target whose whole context fits in the first window
(position < K + stride) has the same context both ways and is never a key token.

The marking model may differ from the evaluated one (the paper marks with a fixed evaluator,
e.g. Llama-3.1-8B, so that models are compared on the same tokens); it must share the data's
tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

WINDOW_TOKENS = 8192  # tokens of short windows per forward pass (windows are batched)


@dataclass(frozen=True)
class KeyTokenRule:
    """Short context K, window stride and the two thresholds (the paper's: 4096, 1024, 2, -2)."""

    context: int = 4096
    stride: int = 1024
    lsd: float = 2.0
    lcl: float = -2.0

    def describe(self) -> str:
        return (f"key token: loss_short - loss_long > {self.lsd:g} and -loss_long > "
                f"{self.lcl:g}; loss_short with the last {self.context} to "
                f"{self.context + self.stride - 1} tokens of context (windows of "
                f"{self.context + self.stride} tokens advanced by {self.stride}); targets at "
                f"positions < {self.context + self.stride} are never key (LongPPL, "
                "arXiv 2410.23771)")


def mark_key_tokens(
    loss_long: np.ndarray, loss_short: np.ndarray, lsd: float, lcl: float
) -> np.ndarray:
    """Key-token mask: LSD > ``lsd`` and LCL > ``lcl``. A NaN short loss (context not
    truncated) is never key."""
    loss_long = np.asarray(loss_long, dtype=np.float64)
    loss_short = np.asarray(loss_short, dtype=np.float64)
    return (loss_short - loss_long > lsd) & (-loss_long > lcl)


def window_starts(n: int, context: int, stride: int) -> list[int]:
    """Starts of the short windows over ``n`` tokens: window ``s`` scores the targets
    ``s + context .. s + context + stride - 1``. The window at 0 is left out: its targets see
    their whole context anyway."""
    return list(range(stride, n - context, stride))


def short_context_losses(
    model: Any, ids: np.ndarray, rule: KeyTokenRule, chunk: int
) -> np.ndarray:
    """Next-token losses with a truncated context, aligned with
    :func:`longctx.eval.loss.token_losses` (``out[j]`` is the loss of ``ids[j + 1]``); NaN
    where the context is not truncated."""
    import torch

    from longctx.train.loss import chunked_token_losses

    n, k, width = len(ids), rule.context, rule.context + rule.stride
    out = np.full(max(n - 1, 0), np.nan)
    starts = window_starts(n, k, rule.stride)
    if not starts:
        return out
    device = next(model.parameters()).device
    seq = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)
    full = [s for s in starts if s + width <= n]
    per_pass = max(1, WINDOW_TOKENS // width)
    groups = [full[a : a + per_pass] for a in range(0, len(full), per_pass)]
    groups += [[s] for s in starts if s + width > n]  # the last, shorter window
    decoder, weight = model.get_decoder(), model.get_output_embeddings().weight
    with torch.inference_mode():
        for group in groups:
            length = min(width, n - group[0])
            x = torch.stack([seq[s : s + length] for s in group])
            hidden = decoder(input_ids=x, use_cache=False).last_hidden_state
            losses = chunked_token_losses(hidden[:, k - 1 : length - 1], weight, x[:, k:], chunk)
            losses = losses.double().cpu().numpy()
            for row, s in enumerate(group):
                out[s + k - 1 : s + length - 1] = losses[row]
    return out
