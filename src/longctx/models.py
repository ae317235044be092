"""Resolve and load causal LMs by name: the embedded ``smollm2-135m`` or a local HF folder.

Shared by training and evaluation. RoPE changes go through ``config.rope_parameters``
(transformers 5.x silently ignores a ``rope_theta=`` keyword), *before* the model is built,
so every rotary module is created with the new frequencies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longctx.embedded import EMBEDDED_NAME, embedded_model_dir
from longctx.errors import LongctxError


class ModelError(LongctxError):
    pass


def resolve_model_dir(spec: str | Path) -> Path:
    """A local HF model folder for ``spec`` (``smollm2-135m`` or a path)."""
    if str(spec) == EMBEDDED_NAME:
        return embedded_model_dir()
    p = Path(spec)
    if not (p / "config.json").is_file():
        raise ModelError(
            f"model {spec!s}: not a HF model folder with config.json "
            f"(use {EMBEDDED_NAME!r}, 'tiny' for training tests, or a local path)"
        )
    return p


def set_rope_theta(config: Any, rope_theta: float, min_positions: int | None = None) -> Any:
    """Set the RoPE base in ``config.rope_parameters`` and raise max positions if needed."""
    if rope_theta <= 0:
        raise ModelError(f"rope_theta must be positive, got {rope_theta}")
    params = dict(getattr(config, "rope_parameters", None) or {"rope_type": "default"})
    params["rope_theta"] = float(rope_theta)
    config.rope_parameters = params
    if min_positions and getattr(config, "max_position_embeddings", 0) < min_positions:
        config.max_position_embeddings = int(min_positions)
    return config


def load_causal_lm(
    spec: str | Path,
    *,
    rope_theta: float | None = None,
    min_positions: int | None = None,
    dtype: Any = None,
    attn_implementation: str = "sdpa",
) -> tuple[Any, Path]:
    """Load (model, folder) with an optional RoPE base override applied before construction."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = resolve_model_dir(spec)
    config = AutoConfig.from_pretrained(str(folder))
    if rope_theta is not None:
        set_rope_theta(config, rope_theta, min_positions)
    elif min_positions and config.max_position_embeddings < min_positions:
        config.max_position_embeddings = int(min_positions)
    kwargs: dict[str, Any] = {"config": config, "attn_implementation": attn_implementation}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    model.config.use_cache = False
    return model, folder
