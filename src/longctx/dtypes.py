"""One dtype vocabulary for training precision, exported weights and evaluation.

Names: ``auto | fp32 | bf16 | fp16``. ``auto`` is bf16 on CUDA (tensor cores, and no loss
scaling unlike fp16) and fp32 on CPU (bf16 matmuls there are slow and round more).
Each user allows a subset (train ``precision`` and ``export_dtype`` below, eval ``dtype``
all four). transformers' spellings (``float32``, ``bfloat16``,
``float16``) are accepted as input and normalised, so YAML written when ``export_dtype``
took them keeps working.
"""

from __future__ import annotations

from typing import Any

from longctx.errors import LongctxError

DTYPE_NAMES = ("auto", "fp32", "bf16", "fp16")
PRECISIONS = ("auto", "fp32", "bf16")  # train ``precision``: fp16 would need loss scaling
EXPORT_DTYPES = ("fp32", "bf16")  # train ``export_dtype``: the master weights or half the size
# the torch / config.json spelling of each concrete name
TORCH_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_FROM_TORCH_NAME = {v: k for k, v in TORCH_NAMES.items()}


class DtypeError(LongctxError):
    pass


def normalize_dtype(value: Any, allowed: tuple[str, ...] = DTYPE_NAMES, *,
                    what: str = "dtype") -> str:
    """``value`` as one of ``allowed`` (``float32`` -> ``fp32``), or a one-line DtypeError."""
    name = _FROM_TORCH_NAME.get(value, value) if isinstance(value, str) else value
    if name not in allowed:
        raise DtypeError(f"{what} {value!r}: expected one of {', '.join(allowed)}")
    return name


def resolve_dtype(name: str, device: Any) -> Any:
    """The ``torch.dtype`` for ``name`` on ``device`` (a ``torch.device`` or a type string):
    ``auto`` is bf16 on CUDA and fp32 elsewhere."""
    import torch

    name = normalize_dtype(name)
    if name == "auto":
        name = "bf16" if getattr(device, "type", device) == "cuda" else "fp32"
    return getattr(torch, TORCH_NAMES[name])
