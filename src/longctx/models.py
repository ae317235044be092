"""Build causal LMs: the embedded ``smollm2-135m``, a local HF folder, or a config (random init).

:func:`load_causal_lm` builds every model of training and evaluation, from a folder or from
a config with random init. RoPE changes go through ``config.rope_parameters``
(:func:`longctx.rope.apply_rope`; transformers 5.x silently ignores a ``rope_theta=``
keyword), *before* the model is built, so every rotary module is created with the new
frequencies.

Loading is safe for folders received from others: ``config.json`` is read as plain JSON
first and must name an architecture built into transformers (a folder's own code, e.g.
``auto_map``, is never run and transformers is never asked, so it never prompts on stdin),
and weights are read only from safetensors (a pickled ``pytorch_model.bin`` is refused).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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


def load_causal_lm(
    source: str | Path | Any,
    *,
    rope: Mapping[str, Any] | None = None,
    min_positions: int | None = None,
    dtype: Any = None,
    attn_implementation: str = "sdpa",
    seed: int = 0,
) -> tuple[Any, Path | None, dict[str, Any]]:
    """(model on CPU, its folder or None, its rope_parameters): every model train and eval build.

    ``source`` is ``smollm2-135m`` or a local folder (checked, then its weights loaded) or a
    transformers config (random init from ``torch.manual_seed(seed)``, e.g. train's ``tiny``;
    the config is changed in place). ``rope`` holds the keywords of
    :func:`longctx.rope.apply_rope`, applied to the config before construction; ``None`` keeps
    the model's RoPE. ``max_position_embeddings`` is raised to ``min_positions`` (except for
    dynamic NTK, where it is the original length). ``dtype`` is a ``torch.dtype``, default fp32.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from longctx.rope import apply_rope

    if isinstance(source, (str, Path)):
        folder: Path | None = resolve_model_dir(source)
        config = load_config(folder)  # plain JSON checks first: never runs folder code
    else:
        folder, config = None, source
    params = apply_rope(config, **dict(rope or {}), seq_len=min_positions)
    config.use_cache = False
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation,
                              "dtype": dtype if dtype is not None else torch.float32}
    if folder is None:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    else:
        model = from_pretrained(folder, config=config, **kwargs)
    model.config.use_cache = False
    return model, folder, params
