"""Preflight: estimate per-GPU memory of a training config and refuse one that cannot fit.

The estimate is deliberately simple and conservative, in bytes per GPU:

- model states: fp32 master weights 4N + fp32 grads 4N + AdamW moments 8N = 16N,
  divided by the number of ranks under FSDP; 0 on the GPU with ``cpu_offload``
  (then only the gathered bf16 weights of the layers in flight stay: 2 layers x 2 bytes).
- activations per token per layer, bf16: about ``2 * (8H + 2*KV + 4I)`` bytes (norm outputs,
  q/k/v, attention output, residuals, gate/up/act/product of the MLP) with flash-style
  attention (no L x L matrix). With checkpointing only each layer's input is kept (4H bytes,
  fp32 residual) plus one layer's full activations during recompute.
- logits: ``chunk * V * 4 bytes * 3`` (fp32 logits, softmax, gradient) with chunked CE,
  ``L * V * 12`` without.
- a fixed 2 GiB for the CUDA context, kernels' workspaces and fragmentation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from longctx.errors import LongctxError

GiB = 1024**3
OVERHEAD = 2 * GiB


class MemoryPreflightError(LongctxError):
    pass


@dataclass
class MemoryEstimate:
    params: int
    model_states: float
    activations: float
    logits: float
    overhead: float

    @property
    def total(self) -> float:
        return self.model_states + self.activations + self.logits + self.overhead

    def describe(self) -> str:
        g = lambda x: f"{x / GiB:.1f} GiB"  # noqa: E731
        return (f"model states {g(self.model_states)} + activations {g(self.activations)} + "
                f"logits {g(self.logits)} + overhead {g(self.overhead)} = {g(self.total)}")

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def estimate(
    hf_config: Any, *, params: int, seq_len: int, micro_batch: int, world: int,
    fsdp: bool, cpu_offload: bool, checkpointing: bool, ce_chunk: int,
) -> MemoryEstimate:
    h = int(hf_config.hidden_size)
    inter = int(getattr(hf_config, "intermediate_size", 4 * h))
    layers = int(hf_config.num_hidden_layers)
    heads = int(hf_config.num_attention_heads)
    kv_heads = int(getattr(hf_config, "num_key_value_heads", heads) or heads)
    head_dim = int(getattr(hf_config, "head_dim", None) or h // heads)
    vocab = int(hf_config.vocab_size)
    tokens = seq_len * micro_batch

    if cpu_offload:
        layer_params = params / max(layers, 1)
        states = 2 * layer_params * 2.0
    else:
        states = 16.0 * params / (world if fsdp else 1)
    per_layer = 2.0 * (8 * h + 2 * kv_heads * head_dim + 4 * inter) * tokens
    if checkpointing:
        acts = layers * 4.0 * h * tokens + per_layer
    else:
        acts = layers * per_layer
    acts += 4.0 * h * tokens * 2  # final hidden state and its gradient
    chunk = min(ce_chunk, tokens) if ce_chunk > 0 else tokens
    logits = chunk * vocab * 4.0 * 3
    return MemoryEstimate(params, states, acts, logits, float(OVERHEAD))


def gpu_memory_bytes(device: Any) -> int | None:
    import torch

    if device.type != "cuda":
        return None
    return int(torch.cuda.get_device_properties(device).total_memory)


def preflight(est: MemoryEstimate, available: float | None, *, what: str) -> None:
    """Raise with the numbers when ``est`` exceeds ``available`` bytes."""
    if available is None:
        return
    if est.total > available:
        raise MemoryPreflightError(
            f"{what} needs about {est.total / GiB:.1f} GiB per GPU but "
            f"{available / GiB:.1f} GiB is available ({est.describe()}). Try --checkpointing, "
            f"a smaller --ce-chunk or --micro-batch, --fsdp over more GPUs, or --cpu-offload "
            f"(skip this check with --preflight false)"
        )
