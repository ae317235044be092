"""RoPE configuration for context extension, plus closed-form inverse frequencies.

transformers 5.x reads the rotary base from ``config.rope_parameters["rope_theta"]`` (a
``rope_theta=`` keyword to ``from_pretrained`` is silently ignored), so every change, the
trained RoPE of ``longctx train`` and the ``--rope-theta`` override of ``longctx eval``
alike, goes through :func:`apply_rope` on the config *before* the model is built (by
:func:`longctx.models.load_causal_lm`).

Supported types (the keys transformers expects):

- ``default``  inv_freq_i = 1 / theta^(2i/d)
- ``linear``   position interpolation: default / factor
- ``dynamic``  HF dynamic NTK: theta' = theta * ((f*L/L0) - (f-1))^(d/(d-2)) when L > L0.
  transformers takes L0 from ``max_position_embeddings``, so for this type we keep
  ``max_position_embeddings`` at the original length (raising it would switch scaling off)
  and the frequencies then change with the longest position in each batch. For training we
  recommend the frozen equivalent: ``default`` with :func:`dynamic_ntk_effective_base`.
- ``yarn``     YaRN (Peng et al., 2023): per-dimension blend of interpolation and
  extrapolation over a linear ramp between beta_fast=32 and beta_slow=1 rotations.
- ``llama3``   Llama-3.1 wavelength-banded scaling (low/high frequency factors).

The paper (Fu et al., 2024) trained LLaMA-2 with HF dynamic NTK, factor 10, at 81,920 tokens
from an original 4,096, with positions running 0..81,919 in every packed row — so the
frequencies it actually trained with are those of one fixed base:

    theta' = 10,000 * ((10 * 81,920 / 4,096) - 9) ** (128 / 126) = 10,000 * 191 ** (64 / 63)
           ≈ 2.076e6

which :func:`dynamic_ntk_effective_base` computes and ``configs/`` writes down.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from longctx.errors import LongctxError


class RopeError(LongctxError):
    pass


def dynamic_ntk_effective_base(
    theta: float, factor: float, seq_len: int, original_max_positions: int, head_dim: int
) -> float:
    """The base HF dynamic NTK uses at ``seq_len`` (a constant when positions run 0..seq_len-1)."""
    if seq_len <= original_max_positions:
        return float(theta)
    ratio = factor * seq_len / original_max_positions - (factor - 1)
    return float(theta * ratio ** (head_dim / (head_dim - 2)))


def paper_effective_base() -> float:
    """Fu et al. (2024): LLaMA-2 (base 10K, head dim 128, 4K) with dynamic NTK factor 10 at 80K."""
    return dynamic_ntk_effective_base(10_000.0, 10.0, 81_920, 4_096, 128)


def rope_parameters(
    rope_type: str,
    theta: float,
    *,
    factor: float | None = None,
    original_max_positions: int | None = None,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
) -> dict[str, Any]:
    """The ``config.rope_parameters`` dict transformers expects for ``rope_type``."""
    params: dict[str, Any] = {"rope_type": rope_type, "rope_theta": float(theta)}
    if rope_type == "default":
        return params
    if factor is None:
        raise RopeError(f"rope_type {rope_type!r} needs a factor")
    params["factor"] = float(factor)
    if rope_type in ("linear", "dynamic"):
        return params
    if original_max_positions is None:
        raise RopeError(f"rope_type {rope_type!r} needs original_max_position_embeddings")
    params["original_max_position_embeddings"] = int(original_max_positions)
    if rope_type == "yarn":
        return params
    if rope_type == "llama3":
        params["low_freq_factor"] = float(low_freq_factor)
        params["high_freq_factor"] = float(high_freq_factor)
        return params
    raise RopeError(f"unsupported rope_type {rope_type!r}")


def apply_rope(
    config: Any,
    *,
    rope_type: str | None = None,
    theta: float | None = None,
    factor: float | None = None,
    original_max_positions: int | None = None,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    seq_len: int | None = None,
) -> dict[str, Any]:
    """Set ``config.rope_parameters`` (and max positions) before construction; returns the dict.

    ``rope_type=None`` keeps the model's own RoPE parameters (every key, e.g. a checkpoint's
    YaRN settings) and ``theta`` then replaces only their base: eval's ``--rope-theta``.
    A type rewrites the parameters from the arguments (training). ``theta=None`` keeps the
    model's base. ``max_position_embeddings`` is raised to at least ``seq_len`` except for
    ``dynamic`` (there it is transformers' original length L0, and raising it would switch
    the scaling off).
    """
    current = dict(getattr(config, "rope_parameters", None) or {})
    old_max = int(getattr(config, "max_position_embeddings", 0) or 0)
    if rope_type is None:
        params = current or {"rope_type": "default"}
        if theta is not None:
            if not theta > 0:
                raise RopeError(f"rope_theta must be positive, got {theta}")
            params["rope_theta"] = float(theta)
            config.rope_parameters = params
    else:
        base = float(theta if theta is not None else current.get("rope_theta", 10_000.0))
        if original_max_positions is None and rope_type in ("yarn", "llama3", "dynamic"):
            original_max_positions = old_max
        params = rope_parameters(
            rope_type, base, factor=factor, original_max_positions=original_max_positions,
            low_freq_factor=low_freq_factor, high_freq_factor=high_freq_factor,
        )
        config.rope_parameters = params
    if params.get("rope_type") == "dynamic":
        if rope_type is not None:
            config.max_position_embeddings = int(original_max_positions or old_max)
    elif seq_len and old_max < seq_len:
        config.max_position_embeddings = int(seq_len)
    return dict(params)


# ---------------------------------------------------------------------- closed forms
def closed_form_inv_freq(
    params: dict[str, Any], head_dim: int, *, seq_len: int | None = None,
    max_position_embeddings: int | None = None,
) -> tuple[np.ndarray, float]:
    """(inv_freq, attention scaling) from the published formulas, in float64.

    Written from the papers (RoFormer, PI, dynamic NTK, YaRN, Llama 3.1), not from
    transformers, so tests can check one against the other.
    """
    kind = params.get("rope_type", "default")
    theta = float(params["rope_theta"])
    d = head_dim
    exponents = np.arange(0, d, 2, dtype=np.float64) / d
    inv = 1.0 / theta**exponents
    if kind == "default":
        return inv, 1.0
    f = float(params["factor"])
    if kind == "linear":
        return inv / f, 1.0
    if kind == "dynamic":
        l0 = int(max_position_embeddings or 0)
        length = max(int(seq_len or l0), l0)
        base = dynamic_ntk_effective_base(theta, f, length, l0, d)
        return 1.0 / base**exponents, 1.0
    l0 = int(params["original_max_position_embeddings"])
    if kind == "yarn":
        beta_fast, beta_slow = 32.0, 1.0

        def dim_for_rotations(rot: float) -> float:
            # the dimension index whose wavelength fits `rot` turns into the original context
            return d * math.log(l0 / (rot * 2 * math.pi)) / (2 * math.log(theta))

        low = max(math.floor(dim_for_rotations(beta_fast)), 0)
        high = min(math.ceil(dim_for_rotations(beta_slow)), d - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
        # ramp 0 -> keep (extrapolate, high frequency), ramp 1 -> interpolate (divide by f)
        out = inv * (1 - ramp) + (inv / f) * ramp
        scale = 0.1 * math.log(f) + 1.0 if f > 1 else 1.0
        return out, scale
    if kind == "llama3":
        lo_f = float(params["low_freq_factor"])
        hi_f = float(params["high_freq_factor"])
        wavelen = 2 * math.pi / inv
        out = np.empty_like(inv)
        for i, (w, x) in enumerate(zip(wavelen, inv, strict=False)):
            if w < l0 / hi_f:
                out[i] = x
            elif w > l0 / lo_f:
                out[i] = x / f
            else:
                s = (l0 / w - lo_f) / (hi_f - lo_f)
                out[i] = (1 - s) * x / f + s * x
        return out, 1.0
    raise RopeError(f"unsupported rope_type {kind!r}")


def model_inv_freq(model: Any) -> np.ndarray:
    """The rotary module's current ``inv_freq`` (any HF LLaMA-family causal LM)."""
    inner = getattr(model, "model", model)
    rotary = getattr(inner, "rotary_emb", None)
    if rotary is None:
        raise RopeError(f"{type(model).__name__} has no rotary_emb module")
    return rotary.inv_freq.detach().double().cpu().numpy()
