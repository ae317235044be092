"""The model block every eval config shares: which model, its RoPE base, dtype and device.

Every eval config (needle, RULER, loss, BookQA, harness) inherits these fields (flat config keys
``model``, ``rope_theta``, ``dtype``, ``device``), so the flags and their help are declared
once; ``longctx eval ... --help`` shows them in a "Model" section.
"""

from __future__ import annotations

from dataclasses import dataclass

from longctx.cliopts import opt

MODEL = "Model"


@dataclass
class EvalModelArgs:
    """The model an eval command loads (see :func:`longctx.eval.generate.load_eval_model`)."""

    model: str = opt("smollm2-135m", "Model: 'smollm2-135m' (embedded) or a local HF model "
                     "folder.", panel=MODEL)
    rope_theta: float | None = opt(None, "Override the RoPE base (rope_theta) before the model "
                                   "is built.", panel=MODEL, show="the model's")
    dtype: str = opt("auto", "auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16.", panel=MODEL)
    device: str = opt("auto", "auto, cpu, cuda or cuda:N.", panel=MODEL)
