"""Per-GPU memory of a training configuration: the model ``longctx plan`` and train's preflight share.

Bytes per GPU, one term per function below, for a LLaMA-style decoder (N parameters, H hidden,
Q = heads x head_dim, KV = kv_heads x head_dim, I the MLP width, V the vocabulary, T tokens
per micro-batch = seq_len x micro_batch):

- model states (:func:`model_states`): weights, gradients and AdamW's two moments, each in the
  master dtype (fp32: 4 x 4 bytes = 16N), divided by the FSDP degree; 0 on the GPU with
  ``cpu_offload`` (they live in pinned host memory, :attr:`MemoryEstimate.host`). Without
  FSDP, autocast keeps a bf16 copy of every weight for the backward (2N).
- gathered parameters (:func:`gathered_params`): under FSDP the bf16 weights of the root unit
  (embedding, final norm, untied head) and of two decoder layers (the current one and the
  prefetched next one) exist unsharded; with ``cpu_offload`` their gradients too, before they
  are copied to the host.
- activations (:func:`activations`): what autograd keeps per layer per token, by checkpointing
  policy (:func:`saved_per_layer`), plus one layer's full set while it is recomputed, scaled
  by one factor fitted on measured peaks (``calibration.json``).
- logits (:func:`logits`): the cross-entropy's chunk of fp32 logits, by ``ce_impl``.
- a fixed overhead (:data:`OVERHEAD`) for the CUDA context, kernel workspaces and the
  allocator's fragmentation; measured peaks (``torch.cuda.max_memory_allocated``) exclude it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any

from longctx.errors import LongctxError
from longctx.train.archs import Shape, shape_of_config

GiB = 1024**3
OVERHEAD = 2 * GiB
POLICIES = ("none", "full", "selective")
CE_IMPLS = ("chunked", "fused", "liger")
CALIBRATION = "calibration.json"


class MemoryPreflightError(LongctxError):
    pass


@cache
def calibration() -> dict[str, Any]:
    """The fitted constants and the measured cases they were fitted on (package data,
    written by ``benchmarks/plan_accuracy.py --update``)."""
    text = resources.files("longctx.train").joinpath(CALIBRATION).read_text(encoding="utf-8")
    return json.loads(text)


@dataclass
class MemoryEstimate:
    params: int
    model_states: float
    gathered: float
    activations: float
    logits: float
    overhead: float
    host: float = 0.0  # pinned host bytes of this rank: offloaded states and activations

    @property
    def total(self) -> float:
        return self.model_states + self.gathered + self.activations + self.logits + self.overhead

    @property
    def allocated(self) -> float:
        """What ``max_memory_allocated`` measures: the total without the fixed overhead."""
        return self.total - self.overhead

    def describe(self) -> str:
        g = lambda x: f"{x / GiB:.1f} GiB"  # noqa: E731
        return (f"model states {g(self.model_states)} + gathered params {g(self.gathered)} + "
                f"activations {g(self.activations)} + logits {g(self.logits)} + overhead "
                f"{g(self.overhead)} = {g(self.total)}")

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


# ----------------------------------------------------------------------------- terms
def model_states(params: int, *, shards: int, cpu_offload: bool, param_bytes: int,
                 autocast: bool) -> tuple[float, float]:
    """(GPU bytes, host bytes) of weights + gradients + AdamW's two moments.

    Each is ``param_bytes`` per parameter (fp32 master: 4 x 4 = 16N), sharded over ``shards``
    FSDP ranks. With ``cpu_offload`` all of it is on the host. ``autocast`` (no FSDP) adds the
    bf16 copy of each weight that autocast makes once per forward and autograd keeps.
    """
    states = 4.0 * param_bytes * params / shards
    if cpu_offload:
        return 0.0, states
    return states + (2.0 * params if autocast else 0.0), 0.0


def gathered_params(shape: Shape, *, sharded: bool, cpu_offload: bool) -> float:
    """bf16 weights FSDP holds unsharded: the root unit and two decoder layers in flight;
    with ``cpu_offload`` also their gradients, until the copy to the host."""
    if not sharded:
        return 0.0
    weights = 2.0 * (shape.root_params + 2 * shape.layer_params)
    return weights * (2 if cpu_offload else 1)


def layer_bytes_per_token(shape: Shape, residual_bytes: int) -> float:
    """Bytes autograd keeps for one decoder layer per token without checkpointing.

    Counted from what the ops save for their backward (sdpa/flash attention: no L x L matrix):
    the layer input and the residual after attention (``residual_bytes`` each: fp32 under
    autocast, bf16 under FSDP's bf16 parameters), each RMSNorm's output (fp32 under autocast,
    plus a bf16 cast per consuming projection: 3 for q/k/v, 2 for gate/up; under bf16 the
    norm's fp32 upcast and its bf16 output), then bf16: q, k, v, the attention output and
    its reshaped copy for o_proj (6Q + 4KV), and the MLP's gate, up, SiLU and product (8I).
    """
    h, q, kv, i = shape.hidden_size, shape.q_dim, shape.kv_dim, shape.intermediate_size
    if residual_bytes == 4:
        norms = 4 * h + 4 * h + 6 * h + 4 * h + 4 * h + 4 * h  # 26H
    else:
        norms = 2 * h + (4 + 2) * h + 2 * h + (4 + 2) * h  # 16H
    return float(norms + 6 * q + 4 * kv + 8 * i)


def saved_per_layer(shape: Shape, policy: str, residual_bytes: int) -> float:
    """Bytes per token a layer keeps between its forward and its backward, by policy.

    none: everything (:func:`layer_bytes_per_token`); full: only the layer input;
    selective: the layer input, the matmul outputs (q 2Q, k and v 4KV, o_proj and down_proj
    4H, gate and up 4I) and the attention output (2Q); norms and the elementwise MLP ops are
    recomputed in the backward.
    """
    h, q, kv, i = shape.hidden_size, shape.q_dim, shape.kv_dim, shape.intermediate_size
    if policy == "none":
        return layer_bytes_per_token(shape, residual_bytes)
    if policy == "full":
        return float(residual_bytes * h)
    if policy == "selective":
        return float(residual_bytes * h + 4 * q + 4 * kv + 4 * h + 4 * i)
    raise ValueError(f"checkpoint policy {policy!r}: one of {', '.join(POLICIES)}")


def activations(shape: Shape, tokens: int, *, policy: str, activation_offload: bool,
                residual_bytes: int, factor: float) -> tuple[float, float]:
    """(GPU bytes, host bytes) of saved activations for ``tokens`` tokens.

    Every layer's saved tensors (:func:`saved_per_layer`), or with ``activation_offload`` only
    those of two layers (the one computing and the one being copied/prefetched) while the rest
    wait in host memory; plus, under checkpointing, one layer's full set while it is
    recomputed; plus the final hidden state and its gradient. ``factor`` is fitted on measured
    peaks (it absorbs what the count above misses or double-counts).
    """
    layers = shape.num_hidden_layers
    saved = saved_per_layer(shape, policy, residual_bytes)
    kept_layers = min(2, layers) if activation_offload else layers
    recompute = layer_bytes_per_token(shape, residual_bytes) if policy != "none" else 0.0
    final = 2.0 * residual_bytes * shape.hidden_size
    gpu = factor * tokens * (kept_layers * saved + recompute + final)
    host = tokens * (layers - kept_layers) * saved if activation_offload else 0.0
    return gpu, host


def logits(shape: Shape, tokens: int, *, ce_chunk: int, ce_impl: str) -> float:
    """The loss's peak: chunked CE holds one chunk's fp32 logits, softmax and gradient
    (chunk x V x 4 x 3) while the backward recomputes it; fused CE (and Liger's) computes the
    gradient in the forward: one chunk's fp32 logits and their gradient (chunk x V x 4 x 2),
    the gradient of the hidden states it keeps for the backward (T x H x 4) and the head's
    gradient, accumulated over the chunks in fp32 (V x H x 4)."""
    chunk = min(ce_chunk, tokens) if ce_chunk > 0 else tokens
    if ce_impl == "chunked":
        return chunk * shape.vocab_size * 4.0 * 3
    if ce_impl in ("fused", "liger"):
        return (chunk * shape.vocab_size * 4.0 * 2 + tokens * shape.hidden_size * 4.0
                + shape.vocab_size * shape.hidden_size * 4.0)
    raise ValueError(f"ce_impl {ce_impl!r}: one of {', '.join(CE_IMPLS)}")


# ----------------------------------------------------------------------------- estimate
def estimate(
    hf_config: Any, *, params: int, seq_len: int, micro_batch: int, world: int,
    fsdp: bool, cpu_offload: bool, checkpointing: bool, ce_chunk: int,
    checkpoint_policy: str = "full", activation_offload: bool = False,
    ce_impl: str = "chunked", param_bytes: int = 4, activation_factor: float | None = None,
) -> MemoryEstimate:
    """Bytes per GPU of training ``hf_config`` (an HF config or a :class:`Shape`).

    ``fsdp`` means the model is sharded (FSDP2 over ``world`` ranks; also one rank with
    ``cpu_offload``); unsharded training runs under bf16 autocast over fp32 master weights.
    ``param_bytes`` is the master dtype's size (4 = fp32, what ``longctx train`` keeps).
    ``activation_factor`` defaults to the calibrated one.
    """
    shape = hf_config if isinstance(hf_config, Shape) else shape_of_config(hf_config)
    factor = (calibration()["fit"]["activation_factor"] if activation_factor is None
              else activation_factor)
    sharded = fsdp or cpu_offload
    tokens = seq_len * micro_batch
    states, host_states = model_states(
        params, shards=world if sharded else 1, cpu_offload=cpu_offload,
        param_bytes=param_bytes, autocast=not sharded)
    policy = checkpoint_policy if checkpointing else "none"
    acts, host_acts = activations(shape, tokens, policy=policy,
                                  activation_offload=activation_offload,
                                  residual_bytes=2 if sharded else 4, factor=factor)
    return MemoryEstimate(
        params=params,
        model_states=states,
        gathered=gathered_params(shape, sharded=sharded, cpu_offload=cpu_offload),
        activations=acts,
        logits=logits(shape, tokens, ce_chunk=ce_chunk, ce_impl=ce_impl),
        overhead=float(OVERHEAD),
        host=host_states + host_acts,
    )


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
            f"--ce-impl fused, a smaller --ce-chunk or --micro-batch, --fsdp over more GPUs, "
            f"--activation-offload or --cpu-offload; `longctx plan` lists what fits (skip "
            f"this check with --preflight false)"
        )
