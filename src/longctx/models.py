"""Resolve and load causal LMs by name: the embedded ``smollm2-135m`` or a local HF folder.

Shared by training and evaluation. RoPE changes go through ``config.rope_parameters``
(transformers 5.x silently ignores a ``rope_theta=`` keyword), *before* the model is built,
so every rotary module is created with the new frequencies.

Loading is safe for folders received from others: ``config.json`` is read as plain JSON
first and must name an architecture built into transformers (a folder's own code, e.g.
``auto_map``, is never run and transformers is never asked, so it never prompts on stdin),
and weights are read only from safetensors (a pickled ``pytorch_model.bin`` is refused).
"""

from __future__ import annotations

import json
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


PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth",
                   "model.ckpt", "tf_model.h5", "flax_model.msgpack")
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def check_model_dir(folder: Path) -> dict[str, Any]:
    """The folder's ``config.json`` as a dict, after refusing (one line) what is unsafe to load.

    Refused: an unreadable config, an architecture transformers does not ship (which would
    need the folder's own Python code), and weights in a pickle format instead of safetensors.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ModelError(f"model {folder}: config.json is unreadable ({type(e).__name__})") from None
    if not isinstance(config, dict):
        raise ModelError(f"model {folder}: config.json is not a JSON object")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING_NAMES:
        archs = config.get("architectures")
        shown = model_type if model_type else (archs[0] if isinstance(archs, list) and archs else None)
        raise ModelError(
            f"model {folder}: architecture {shown!r} is not built into transformers; longctx "
            f"never runs code from model folders"
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(
            f"model {folder}: architecture {model_type!r} is not a causal language model "
            f"transformers can load"
        )
    if not any((folder / n).is_file() for n in SAFE_WEIGHTS):
        pickled = [n for n in PICKLED_WEIGHTS if (folder / n).exists()]
        if pickled:
            raise ModelError(
                f"model {folder}: weights are in {pickled[0]}, a pickle format that can run code; "
                f"longctx loads only safetensors (convert the folder to model.safetensors)"
            )
        raise ModelError(f"model {folder}: no model.safetensors (longctx loads only safetensors)")
    return config


def load_config(folder: Path) -> Any:
    """``AutoConfig`` of a checked folder, never running the folder's code."""
    from transformers import AutoConfig

    check_model_dir(folder)
    return AutoConfig.from_pretrained(str(folder), trust_remote_code=False)


def from_pretrained(folder: Path, **kwargs: Any) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` of a checked folder: safetensors, no remote code."""
    from transformers import AutoModelForCausalLM

    check_model_dir(folder)
    return AutoModelForCausalLM.from_pretrained(
        str(folder), trust_remote_code=False, use_safetensors=True, **kwargs
    )


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
    folder = resolve_model_dir(spec)
    config = load_config(folder)
    if rope_theta is not None:
        set_rope_theta(config, rope_theta, min_positions)
    elif min_positions and config.max_position_embeddings < min_positions:
        config.max_position_embeddings = int(min_positions)
    kwargs: dict[str, Any] = {"config": config, "attn_implementation": attn_implementation}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = from_pretrained(folder, **kwargs)
    model.config.use_cache = False
    return model, folder
