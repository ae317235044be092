"""Chunked cross-entropy equals the full computation in value and gradients; the per-token
form (eval loss) is the same losses, token by token."""

from __future__ import annotations

import torch

from longctx.train.loss import chunked_cross_entropy, chunked_token_losses


def test_chunked_equals_full_value_and_grad():
    torch.manual_seed(0)
    h = torch.randn(2, 50, 16, requires_grad=True)
    w = torch.randn(97, 16, requires_grad=True)
    t = torch.randint(0, 97, (2, 50))
    t[0, :5] = -100
    t[1, -1] = -100
    ref = torch.nn.functional.cross_entropy((h @ w.t()).reshape(-1, 97), t.reshape(-1),
                                            ignore_index=-100, reduction="sum")
    ref.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    total, count = chunked_cross_entropy(h, w, t, chunk=7)
    total.backward()
    assert int(count) == 100 - 6
    torch.testing.assert_close(total, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(h.grad, gh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.grad, gw, rtol=1e-5, atol=1e-6)


def test_chunked_never_holds_full_logits():
    """Peak saved activations stay O(chunk x vocab): count elements saved for backward."""
    torch.manual_seed(0)
    L, V, H, chunk = 512, 1000, 8, 64
    h = torch.randn(1, L, H, requires_grad=True)
    w = torch.randn(V, H, requires_grad=True)
    t = torch.randint(0, V, (1, L))
    saved: list[int] = []

    def pack(x):
        saved.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        total, _ = chunked_cross_entropy(h, w, t, chunk=chunk)
    assert max(saved) < L * V / 4  # nothing logit-sized for the whole sequence is kept
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        chunked_cross_entropy(h, w, t, chunk=0)
    assert max(saved) >= L * V  # the unchunked reference does keep full logits


def test_per_token_losses_are_the_summed_ones_token_by_token():
    torch.manual_seed(0)
    h = torch.randn(2, 50, 16)
    w = torch.randn(97, 16)
    t = torch.randint(0, 97, (2, 50))
    t[0, :5] = -100
    ref = torch.nn.functional.cross_entropy((h @ w.t()).reshape(-1, 97), t.reshape(-1),
                                            ignore_index=-100, reduction="none").reshape(2, 50)
    with torch.inference_mode():
        for chunk in (0, 7, 50, 1000):
            per = chunked_token_losses(h, w, t, chunk)
            assert per.shape == t.shape and per.dtype == torch.float32
            torch.testing.assert_close(per, ref, rtol=1e-5, atol=1e-5)
            assert bool((per[0, :5] == 0).all())
            total, _ = chunked_cross_entropy(h, w, t, chunk)
            torch.testing.assert_close(per.sum(), total, rtol=1e-5, atol=1e-4)
