"""``longctx plan``: predicted memory and speed of every way to train a model at a length.

Memory comes from :mod:`longctx.train.memory` (the model train's preflight uses). Time:

- FLOPs per token (:func:`model_flops_per_token`): 6N for the matmuls (N = parameters in
  matmuls: all but the input embedding) plus causal attention, 12 x layers x L x Q for a full
  L x L forward + backward, halved by the causal mask: 6 x layers x L x Q (Q = heads x
  head_dim). This is the convention of ``benchmarks/train_throughput.py``'s MFU.
- FLOPs the hardware runs (:func:`hardware_flops_per_token`): the above, plus one more forward
  of the decoder layers under full checkpointing (2 x layer params + 2 x layers x L x Q), a
  fraction of it under selective checkpointing (:data:`SELECTIVE_RECOMPUTE`, the elementwise
  ops only), and the LM head's forward again (2VH) when chunked CE recomputes it.
- seconds = FLOPs / (GPU bf16 peak x efficiency), the efficiency fitted on measured runs per
  attention kind and falling off for narrow models (:func:`efficiency`).
- host and peer transfers (CPU offload of states and activations over PCIe, FSDP's
  all-gathers and reduce-scatters over NVLink) overlap the compute: a micro-step takes the
  longest of the three (:func:`micro_step_seconds`); with CPU offload the optimizer step
  runs on the host after the backward (:data:`HOST_ADAM_BYTES_S`).

The fitted constants and the runs they come from are ``calibration.json`` in this package
(``benchmarks/plan_accuracy.py --update`` rewrites it from ``benchmarks/results/``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import typer

from longctx.cliopts import flag_command, opt
from longctx.config import parse_count
from longctx.errors import LongctxError
from longctx.train.archs import ARCHS, Shape, resolve_shape
from longctx.train.memory import GiB, MemoryEstimate, calibration, estimate

SELECTIVE_RECOMPUTE = 0.1  # share of a forward that selective checkpointing recomputes (unmeasured)
# CPU offload's AdamW runs on the host after the backward (not overlapped). It is bound by
# memory traffic: it reads weight, gradient and both moments and writes weight and moments,
# 7 x param_bytes per parameter, at a server's DRAM bandwidth (an assumption, not measured
# apart: the one offloaded run measures compute and this together)
HOST_ADAM_BYTES_S = 100e9
CE_CHUNKS = (2048, 4096, 8192, 16384)
CE_CHOICES = ("chunked", "fused")
POLICY_CHOICES = ("none", "full", "selective")


class PlanError(LongctxError):
    pass


@dataclass(frozen=True)
class Gpu:
    """One accelerator: usable memory, dense bf16 tensor-core peak, host and peer links."""

    name: str
    memory_gib: float
    peak_flops: float
    pcie_bytes_s: float
    nvlink_bytes_s: float


# Vendor spec sheets (NVIDIA A100, H100 and H200 datasheets): dense bf16 peak without
# sparsity, PCIe Gen4 x16 (A100) / Gen5 x16 (H100, H200) and NVLink bandwidth per direction.
# Memory: H200's is what torch reported on the measured H200 (139.8 GiB of the 141 GB);
# A100/H100 80 GB are taken as 79 GiB usable (the runtime keeps some; not measured here).
GPUS: dict[str, Gpu] = {
    "h100": Gpu("H100", 79.0, 989.4e12, 64e9, 450e9),
    "h200": Gpu("H200", 139.8, 989.4e12, 64e9, 450e9),
    "a100": Gpu("A100", 79.0, 312e12, 32e9, 300e9),
}


def gpu_named(device_name: str) -> Gpu | None:
    """The table entry of a CUDA device name such as ``NVIDIA H200`` (None when unknown)."""
    up = device_name.upper()
    for key, gpu in GPUS.items():
        if key.upper() in up:
            return gpu
    return None


@dataclass(frozen=True)
class Combo:
    """One way to train: GPUs (FSDP over all of them), checkpointing policy, offloads,
    micro-batch and cross-entropy settings."""

    gpus: int
    policy: str  # none | full | selective
    activation_offload: bool
    cpu_offload: bool
    micro_batch: int
    ce_chunk: int
    ce_impl: str

    @property
    def sharded(self) -> bool:
        """FSDP2: under torchrun with several GPUs, or one rank for CPU offload."""
        return self.gpus > 1 or self.cpu_offload


@dataclass
class Prediction:
    combo: Combo
    memory: MemoryEstimate
    host_bytes: float  # host memory of the whole node (all ranks' offloaded bytes)
    step_s: float
    tokens_per_s: float
    gpu_bytes: float  # what one GPU has
    host_available: float | None

    @property
    def fits_gpu(self) -> bool:
        return self.memory.total <= self.gpu_bytes

    @property
    def fits_host(self) -> bool:
        return self.host_available is None or self.host_bytes <= self.host_available

    @property
    def fits(self) -> bool:
        return self.fits_gpu and self.fits_host

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self.combo), "gib_per_gpu": self.memory.total / GiB,
                "host_gib": self.host_bytes / GiB, "step_s": self.step_s,
                "tokens_per_s": self.tokens_per_s, "fits": self.fits,
                "fits_gpu": self.fits_gpu, "fits_host": self.fits_host,
                "memory_bytes": self.memory.as_dict()}


def _nothing_fits(cfg: Any, preds: list[Prediction], gpu_bytes: float,
                  host: float | None) -> str:
    """One line naming the limit that rules out the closest combinations."""
    head = f"nothing fits: {cfg.model} at seq_len {cfg.seq_len}"
    on_gpu = [p for p in preds if p.fits_gpu]
    if not on_gpu:
        least = min(preds, key=lambda p: p.memory.total)
        return (f"{head} needs at least {least.memory.total / GiB:.1f} GiB per GPU "
                f"({_label(least.combo)}; {least.memory.describe()}) but "
                f"{gpu_bytes / GiB:.1f} GiB is available")
    least = min(on_gpu, key=lambda p: p.host_bytes)
    return (f"{head}: the combinations that fit in {gpu_bytes / GiB:.1f} GiB per GPU need at "
            f"least {least.host_bytes / GiB:.1f} GiB of host memory ({_label(least.combo)}) "
            f"but {(host or 0) / GiB:.1f} GiB is available (--host-memory)")


# ----------------------------------------------------------------------------- time
def model_flops_per_token(shape: Shape, seq_len: int) -> float:
    """6N + causal attention 6 x layers x L x Q (forward + backward, the MFU convention)."""
    return 6.0 * shape.matmul_params + 6.0 * shape.num_hidden_layers * seq_len * shape.q_dim


def hardware_flops_per_token(shape: Shape, seq_len: int, *, policy: str, ce_impl: str) -> float:
    """:func:`model_flops_per_token` plus what is computed twice: the decoder's forward under
    checkpointing (all of it for ``full``, :data:`SELECTIVE_RECOMPUTE` of it for
    ``selective``) and the LM head's forward when chunked CE recomputes it in the backward."""
    layers = shape.num_hidden_layers
    forward = 2.0 * layers * shape.layer_params + 2.0 * layers * seq_len * shape.q_dim
    share = {"none": 0.0, "full": 1.0, "selective": SELECTIVE_RECOMPUTE}[policy]
    head = 2.0 * shape.vocab_size * shape.hidden_size if ce_impl == "chunked" else 0.0
    return model_flops_per_token(shape, seq_len) + share * forward + head


def efficiency(shape: Shape, attention: str, fit: dict[str, Any]) -> float:
    """Share of the bf16 peak reached: ``e_kind x H / (H + H0)``.

    One ``e`` per attention kind (sdpa, flex) and one width ``H0`` shared by all, fitted on
    measured runs: narrow models (small H) run small matmuls that fill the tensor cores less.
    A kind without a measured run uses sdpa's.
    """
    per_kind = fit["efficiency"]
    e = per_kind.get(attention, per_kind["sdpa"])
    h = shape.hidden_size
    return e * h / (h + fit["width_half"])


def micro_step_seconds(shape: Shape, combo: Combo, *, seq_len: int, gpu: Gpu, attention: str,
                       param_bytes: int, fit: dict[str, Any]) -> float:
    """Seconds of one micro-batch on one GPU: the longest of compute, PCIe and NVLink.

    PCIe (CPU offload): each micro-step copies the rank's parameter shard to the GPU twice
    (forward, backward) and its gradient shard back (3 x param_bytes x N / gpus); activation
    offload copies the saved activations out and back. NVLink (FSDP over several GPUs): two
    bf16 all-gathers and one fp32 reduce-scatter of the parameters, (g - 1) / g of them.
    """
    tokens = seq_len * combo.micro_batch
    flops = tokens * hardware_flops_per_token(shape, seq_len, policy=combo.policy,
                                              ce_impl=combo.ce_impl)
    compute = flops / (gpu.peak_flops * efficiency(shape, attention, fit))
    pcie = 0.0
    if combo.cpu_offload:
        pcie += 3.0 * param_bytes * shape.params / combo.gpus
    if combo.activation_offload:
        pcie += 2.0 * offloaded_activation_bytes(shape, combo, tokens)
    nvlink = 0.0
    if combo.gpus > 1:
        nvlink = (2 * 2.0 + 4.0) * shape.params * (combo.gpus - 1) / combo.gpus
    return max(compute, pcie / gpu.pcie_bytes_s, nvlink / gpu.nvlink_bytes_s)


def offloaded_activation_bytes(shape: Shape, combo: Combo, tokens: int) -> float:
    """Activation bytes that go to the host and back per micro-step (all but two layers')."""
    from longctx.train.memory import saved_per_layer

    residual = 2 if combo.sharded else 4
    layers = max(shape.num_hidden_layers - 2, 0)
    return tokens * layers * saved_per_layer(shape, combo.policy, residual)


# ----------------------------------------------------------------------------- predict
def predict(shape: Shape, combo: Combo, *, seq_len: int, batch_tokens: int, gpu: Gpu,
            gpu_bytes: float | None = None, host_available: float | None = None,
            attention: str = "sdpa", param_bytes: int = 4,
            fit: dict[str, Any] | None = None) -> Prediction:
    """Memory per GPU, node host memory and tokens/s of ``combo`` (``fit``: the calibrated
    constants unless given)."""
    fit = fit or calibration()["fit"]
    mem = estimate(shape, params=shape.params, seq_len=seq_len, micro_batch=combo.micro_batch,
                   world=combo.gpus, fsdp=combo.sharded, cpu_offload=combo.cpu_offload,
                   checkpointing=combo.policy != "none",
                   checkpoint_policy=combo.policy if combo.policy != "none" else "full",
                   ce_chunk=combo.ce_chunk, activation_offload=combo.activation_offload,
                   ce_impl=combo.ce_impl, param_bytes=param_bytes,
                   activation_factor=fit["activation_factor"])
    accum = batch_tokens // (seq_len * combo.micro_batch * combo.gpus)
    step = accum * micro_step_seconds(shape, combo, seq_len=seq_len, gpu=gpu,
                                      attention=attention, param_bytes=param_bytes, fit=fit)
    if combo.cpu_offload:  # the ranks of a node share its memory bandwidth
        step += 7.0 * param_bytes * shape.params / HOST_ADAM_BYTES_S
    return Prediction(combo, mem, mem.host * combo.gpus, step, batch_tokens / step,
                      gpu.memory_gib * GiB if gpu_bytes is None else gpu_bytes, host_available)


def predict_run(config: dict[str, Any], gpu_name: str,
                fit: dict[str, Any] | None = None) -> Prediction:
    """The prediction for a measured run's ``config`` (the keys of calibration.json's cases:
    arch, seq_len, policy, activation_offload, cpu_offload, ce_chunk, ce_impl, attention,
    param_bytes; micro_batch and gpus default to 1) on the GPU named ``gpu_name``."""
    mb, gpus = config.get("micro_batch", 1), config.get("gpus", 1)
    combo = Combo(gpus, config["policy"], config["activation_offload"], config["cpu_offload"],
                  mb, config["ce_chunk"], config["ce_impl"])
    return predict(ARCHS[config["arch"]], combo, seq_len=config["seq_len"],
                   batch_tokens=config["seq_len"] * mb * gpus,
                   gpu=gpu_named(gpu_name) or GPUS["h100"], attention=config["attention"],
                   param_bytes=config["param_bytes"], fit=fit)


def combinations(seq_len: int, gpus: int, batch_tokens: int) -> Iterator[Combo]:
    """Every combination that divides the batch: GPUs 1..gpus (FSDP over all used),
    micro-batch 1, 2, 4, ... rows, each policy, offloads, CE chunk and implementation."""
    rows = batch_tokens // seq_len
    for g in range(1, gpus + 1):
        mb = 1
        while mb * g <= rows:
            if rows % (mb * g) == 0:
                tokens = seq_len * mb
                chunks = [c for c in CE_CHUNKS if c <= tokens] or [CE_CHUNKS[0]]
                for policy in POLICY_CHOICES:
                    for act_off in (False, True):
                        for cpu_off in (False, True):
                            for chunk in chunks:
                                for ce in CE_CHOICES:
                                    yield Combo(g, policy, act_off, cpu_off, mb, chunk, ce)
            mb *= 2


def plan(shape: Shape, *, seq_len: int, gpus: int, batch_tokens: int, gpu: Gpu,
         gpu_bytes: float | None = None, host_available: float | None = None,
         attention: str = "sdpa", param_bytes: int = 4) -> list[Prediction]:
    """Predictions of every combination in :func:`recommend`'s order, those that fit first."""
    preds = [predict(shape, c, seq_len=seq_len, batch_tokens=batch_tokens, gpu=gpu,
                     gpu_bytes=gpu_bytes, host_available=host_available, attention=attention,
                     param_bytes=param_bytes)
             for c in combinations(seq_len, gpus, batch_tokens)]
    return sorted(preds, key=lambda p: (not p.fits, *_preference(p)))


def _preference(p: Prediction) -> tuple[float, int, float]:
    """Fastest first; among equally fast ones fewer offloads (their overheads beyond the
    modelled transfers are not measured), then the least memory."""
    return -p.tokens_per_s, p.combo.activation_offload + p.combo.cpu_offload, p.memory.total


def recommend(preds: list[Prediction]) -> Prediction | None:
    """The fastest combination that fits (see :func:`_preference` for ties)."""
    fitting = [p for p in preds if p.fits]
    return min(fitting, key=_preference) if fitting else None


def train_command(model: str, combo: Combo, *, seq_len: int, batch_tokens: int,
                  doc_mask: str) -> list[str]:
    """``longctx train`` arguments (``torchrun`` for several GPUs) that run ``combo``,
    with the flag names of TrainConfig; DATA and OUT are the user's."""
    head = (["longctx", "train"] if combo.gpus == 1 else
            ["torchrun", "--nproc-per-node", str(combo.gpus), "-m", "longctx", "train"])
    args = [*head, "--model", model, "--data", "DATA", "--out", "OUT",
            "--seq-len", str(seq_len), "--batch-tokens", str(batch_tokens)]
    if combo.micro_batch != 1:
        args += ["--micro-batch", str(combo.micro_batch)]
    if combo.policy == "none":
        args.append("--no-checkpointing")
    else:
        args += ["--checkpointing", "--checkpoint-policy", combo.policy]
    if combo.activation_offload:
        args.append("--activation-offload")
    if combo.cpu_offload:
        args.append("--cpu-offload")
    args += ["--ce-impl", combo.ce_impl, "--ce-chunk", str(combo.ce_chunk)]
    if doc_mask != "none":
        args += ["--doc-mask", doc_mask]
    return args


# ----------------------------------------------------------------------------- command
@dataclass
class PlanConfig:
    """``longctx plan`` settings (flags only)."""

    model: str | None = opt(None, "'smollm2-135m', 'tiny', 'llama-1b', 'llama-8b' (shapes, no weights) "
                     "or a local HF model folder (only its config.json is read).",
                     required=True)
    seq_len: int | None = opt(None, "Training length in tokens.", required=True, min=1)
    gpus: int = opt(1, "GPUs on the node; every count 1..N is planned (FSDP over those used).",
                    min=1)
    gpu_memory: str = opt("auto", "GiB per GPU, or h100 | h200 | a100 (memory and bf16 peak).",
                          show="this machine's GPU, else h100")
    batch_tokens: str = opt("", "Global tokens per optimizer step (a multiple of seq_len).",
                            show="one sequence per GPU")
    host_memory: float | None = opt(None, "Host RAM in GiB for CPU offload.",
                                    show="this machine's")
    doc_mask: str = opt("none", "none | mask (as `longctx train --doc-mask`; mask uses "
                        "flex_attention on GPU).")
    rows: int = opt(40, "Table rows, fitting and fastest first (0 = every combination).",
                    min=0)
    json: bool = opt(False, "Print JSON instead of the table.", flags=("--json",))


def resolve_gpu(spec: str) -> tuple[Gpu, float, str]:
    """(GPU for the bf16 peak, bytes per GPU, what was assumed) for ``--gpu-memory``."""
    if spec.lower() in GPUS:
        gpu = GPUS[spec.lower()]
        return gpu, gpu.memory_gib * GiB, gpu.name
    if spec == "auto":
        detected = _cuda_gpu()
        if detected is not None:
            return detected
        gpu = GPUS["h100"]
        return gpu, gpu.memory_gib * GiB, "H100 (no CUDA GPU here)"
    try:
        gib = float(spec)
    except ValueError:
        raise PlanError(f"--gpu-memory {spec!r}: GiB per GPU or one of "
                        f"{', '.join(GPUS)}") from None
    if not gib > 0:
        raise PlanError(f"--gpu-memory {spec!r}: must be positive")
    return GPUS["h100"], gib * GiB, f"{gib:g} GiB, H100 bf16 peak"


def _cuda_gpu() -> tuple[Gpu, float, str] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    total = float(torch.cuda.get_device_properties(0).total_memory)
    gpu = gpu_named(name)
    if gpu is None:
        return GPUS["h100"], total, f"{name} (unknown peak: H100's assumed)"
    return gpu, total, name


def host_memory_bytes() -> float | None:
    """This machine's physical RAM."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _plan(cfg: PlanConfig) -> None:
    """Predict peak memory per GPU and tokens/s of every way to train MODEL at SEQ_LEN
    (checkpointing policy, activation and CPU offload, FSDP degree, micro-batch, CE chunk and
    implementation) and print the fastest that fits as a `longctx train` command line.
    The model is calibrated on measured runs (calibration.json in the package)."""
    if cfg.doc_mask not in ("none", "mask"):
        raise PlanError(f"--doc-mask {cfg.doc_mask!r}: none or mask")
    shape = resolve_shape(cfg.model)
    gpu, gpu_bytes, gpu_label = resolve_gpu(cfg.gpu_memory)
    batch = (parse_count(cfg.batch_tokens, name="batch_tokens") if cfg.batch_tokens
             else cfg.seq_len * cfg.gpus)
    if batch < cfg.seq_len or batch % cfg.seq_len:
        raise PlanError(f"--batch-tokens {batch}: must be a multiple of --seq-len {cfg.seq_len}")
    host = cfg.host_memory * GiB if cfg.host_memory is not None else host_memory_bytes()
    attention = "flex" if cfg.doc_mask == "mask" else "sdpa"
    preds = plan(shape, seq_len=cfg.seq_len, gpus=cfg.gpus, batch_tokens=batch, gpu=gpu,
                 gpu_bytes=gpu_bytes, host_available=host, attention=attention)
    best = recommend(preds)
    command = (train_command(cfg.model, best.combo, seq_len=cfg.seq_len, batch_tokens=batch,
                             doc_mask=cfg.doc_mask) if best else None)
    if cfg.json:
        typer.echo(json.dumps({
            "model": cfg.model, "params": shape.params, "seq_len": cfg.seq_len,
            "batch_tokens": batch, "gpus": cfg.gpus, "gpu": gpu_label,
            "gib_per_gpu": gpu_bytes / GiB, "host_gib": host / GiB if host else None,
            "attention": attention, "calibration": calibration()["fit"],
            "combinations": [p.as_dict() for p in preds],
            "recommended": ({**best.as_dict(), "command": " ".join(command)} if best else None),
        }, indent=2))
    else:
        _print_table(preds, cfg, shape, gpu_label, gpu_bytes, host, batch)
    if best is None:
        raise PlanError(_nothing_fits(cfg, preds, gpu_bytes, host))
    if not cfg.json:
        typer.echo(f"recommended: {' '.join(command)}")
        named = (f"; {cfg.model} is a shape: give --model a model folder of that shape"
                 if cfg.model in ("llama-1b", "llama-8b") else "")
        typer.echo(f"(DATA: your packed data, OUT: the output folder; add --steps N or "
                   f"--tokens T{named})")


def _label(c: Combo) -> str:
    parts = [f"{c.gpus} GPU{'s' if c.gpus > 1 else ''}", f"checkpointing {c.policy}"]
    if c.activation_offload:
        parts.append("activation offload")
    if c.cpu_offload:
        parts.append("CPU offload")
    parts.append(f"micro-batch {c.micro_batch}, {c.ce_impl} CE {c.ce_chunk}")
    return ", ".join(parts)


def _print_table(preds: list[Prediction], cfg: PlanConfig, shape: Shape, gpu_label: str,
                 gpu_bytes: float, host: float | None, batch: int) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = preds if cfg.rows == 0 else preds[: cfg.rows]
    host_text = f"{host / GiB:.0f} GiB host" if host else "host memory unknown"
    table = Table(title=f"{cfg.model} ({shape.params / 1e9:.2f}B params) at {cfg.seq_len} "
                  f"tokens, {batch} tokens/step on {gpu_label}: {gpu_bytes / GiB:.1f} GiB/GPU, "
                  f"{host_text} ({len(shown)} of {len(preds)} combinations)")
    for col in ("GPUs", "ckpt", "act off", "cpu off", "mb", "CE", "chunk", "GiB/GPU",
                "host GiB", "tokens/s", "fits"):
        table.add_column(col, justify="right")
    for p in shown:
        c = p.combo
        why = "yes" if p.fits else ("no: GPU" if not p.fits_gpu else "no: host")
        table.add_row(str(c.gpus), c.policy, "yes" if c.activation_offload else "",
                      "yes" if c.cpu_offload else "", str(c.micro_batch), c.ce_impl,
                      str(c.ce_chunk), f"{p.memory.total / GiB:.1f}",
                      f"{p.host_bytes / GiB:.1f}", f"{p.tokens_per_s:,.0f}", why)
    Console(width=max(120, Console().width)).print(table)


plan_command = flag_command(PlanConfig, _plan)
