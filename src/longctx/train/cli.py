"""``longctx train``: flags, ``--config FILE`` and ``--set key=value`` build one TrainConfig.

The same command runs on one process or under ``torchrun --nproc-per-node N``; rerunning
it with a larger ``--steps`` resumes from ``OUT/checkpoints/latest``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from longctx.config import build_config, explicit_cli_values

_R = "RoPE"
_M = "Memory / distributed"
_O = "Optimization"


def train_command(
    ctx: typer.Context,
    data: Optional[str] = typer.Option(None, help="Packed data folder (from `longctx data build`)."),
    model: Optional[str] = typer.Option(
        None, help="'smollm2-135m' (embedded), 'tiny' (random 2-layer LLaMA sized to the data's "
        "tokenizer) or a local HF model folder. [default: tiny]"),
    out: Optional[str] = typer.Option(None, help="Output folder (checkpoints, metrics, final/)."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (larger than a previous run = resume)."),
    tokens: Optional[str] = typer.Option(None, help="Train tokens instead of --steps, e.g. 5B."),
    seq_len: Optional[int] = typer.Option(
        None, help="Training length; must divide the data's row length. [default: the data's]"),
    batch_tokens: Optional[str] = typer.Option(
        None, help="Global tokens per optimizer step, e.g. 4M (accumulation is derived). "
        "[default: one sequence]"),
    micro_batch: Optional[int] = typer.Option(None, help="Rows per forward pass per rank. [default: 1]"),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (paper: 2e-5). [default: 2e-5]", rich_help_panel=_O),
    warmup_steps: Optional[int] = typer.Option(None, help="Linear warmup steps. [default: 0]", rich_help_panel=_O),
    schedule: Optional[str] = typer.Option(None, help="constant (paper) | cosine. [default: constant]", rich_help_panel=_O),
    min_lr_ratio: Optional[float] = typer.Option(None, help="Cosine floor as a fraction of lr. [default: 0.1]", rich_help_panel=_O),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay. [default: 0]", rich_help_panel=_O),
    beta1: Optional[float] = typer.Option(None, help="AdamW beta1. [default: 0.9]", rich_help_panel=_O),
    beta2: Optional[float] = typer.Option(None, help="AdamW beta2. [default: 0.95]", rich_help_panel=_O),
    grad_clip: Optional[float] = typer.Option(None, help="Gradient norm clip, 0 = off. [default: 1.0]", rich_help_panel=_O),
    rope_theta: Optional[float] = typer.Option(
        None, help="RoPE base, e.g. 500000 (Xiong et al.) or 2.08e6 (paper). [default: model's]",
        rich_help_panel=_R),
    rope_type: Optional[str] = typer.Option(
        None, help="default | linear | dynamic | yarn | llama3. [default: default]", rich_help_panel=_R),
    rope_factor: Optional[float] = typer.Option(None, help="Scaling factor (non-default types).", rich_help_panel=_R),
    rope_original_max_positions: Optional[int] = typer.Option(
        None, help="Pre-training context (yarn, llama3; dynamic's L0). [default: model's max positions]",
        rich_help_panel=_R),
    rope_low_freq_factor: Optional[float] = typer.Option(None, help="llama3 low_freq_factor. [default: 1]", rich_help_panel=_R),
    rope_high_freq_factor: Optional[float] = typer.Option(None, help="llama3 high_freq_factor. [default: 4]", rich_help_panel=_R),
    doc_mask: Optional[str] = typer.Option(
        None, help="none: attend across documents (paper) | mask: reset positions per document, "
        "block attention between documents and skip each document's first token in the loss. "
        "[default: none]"),
    save_every: Optional[int] = typer.Option(None, help="Checkpoint every K steps (0 = only at the end/signal). [default: 0]"),
    keep_checkpoints: Optional[int] = typer.Option(None, help="Checkpoints kept. [default: 2]"),
    seed: Optional[int] = typer.Option(None, help="Seed of data order and tiny init. [default: 0]"),
    precision: Optional[str] = typer.Option(
        None, help="auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16. [default: auto]", rich_help_panel=_M),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda. [default: auto]", rich_help_panel=_M),
    checkpointing: Optional[bool] = typer.Option(
        None, "--checkpointing/--no-checkpointing", help="Activation checkpointing. [default: on]",
        rich_help_panel=_M),
    ce_chunk: Optional[int] = typer.Option(
        None, help="Tokens per cross-entropy chunk (0 = whole sequence). [default: 4096]", rich_help_panel=_M),
    fsdp: Optional[bool] = typer.Option(
        None, "--fsdp/--no-fsdp", help="FSDP2 sharding (automatic under torchrun). [default: off]",
        rich_help_panel=_M),
    cpu_offload: Optional[bool] = typer.Option(
        None, "--cpu-offload/--no-cpu-offload", help="Keep params/grads/optimizer on the host (FSDP2).",
        rich_help_panel=_M),
    gpu_memory_gb: Optional[float] = typer.Option(
        None, help="Memory per GPU for the preflight check. [default: the device's]", rich_help_panel=_M),
    preflight: Optional[bool] = typer.Option(
        None, "--preflight/--no-preflight", help="Refuse configs estimated not to fit. [default: on]",
        rich_help_panel=_M),
    eval_data: Optional[str] = typer.Option(None, help="Held-out packed folder for periodic eval loss."),
    eval_every: Optional[int] = typer.Option(None, help="Eval every K steps (and at the end). [default: 0]"),
    eval_rows: Optional[int] = typer.Option(None, help="Held-out rows per evaluation. [default: 4]"),
    tensorboard: Optional[bool] = typer.Option(
        None, "--tensorboard/--no-tensorboard", help="Also log to OUT/tensorboard (needs tensorboard)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file with any of these keys."),
    set_: list[str] = typer.Option([], "--set", help="Override KEY=VALUE (repeatable), applied last."),
) -> None:
    """Continually pretrain a causal LM on packed shards with an enlarged RoPE base.

    Writes OUT/metrics.jsonl (step, loss, lr, tokens, tokens_per_s), OUT/checkpoints/,
    OUT/final/ (plain HF model) and OUT/manifest.json. Multi-GPU: torchrun --nproc-per-node N
    -m longctx train ... (same flags).
    """
    from longctx.train.config import TrainConfig
    from longctx.train.loop import train

    values = {k: v for k, v in ctx.params.items() if k not in ("config", "set_")}
    cli = {k: v for k, v in explicit_cli_values(ctx, values).items() if v is not None}
    cfg = build_config(TrainConfig, config_file=config, cli=cli, overrides=set_)
    train(cfg)
