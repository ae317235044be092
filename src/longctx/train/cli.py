"""``longctx train``: flags, ``--config FILE`` and ``--set key=value`` build one TrainConfig.

The same command runs on one process or under ``torchrun --nproc-per-node N``; rerunning
it with a larger ``--steps`` resumes from ``OUT/checkpoints/latest``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from longctx.config import build_config, explicit_cli_values

_R = "RoPE"
_M = "Memory / distributed"
_O = "Optimization"
_T = "Tiny model (--model tiny)"


def train_command(
    ctx: typer.Context,
    data: Annotated[
        str | None, typer.Option(help="Packed data folder (from `longctx data build`).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="'smollm2-135m' (embedded), 'tiny' (random 2-layer LLaMA sized to the data's "
            "tokenizer) or a local HF model folder. [default: tiny]"
        ),
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="Output folder (checkpoints, metrics, final/).")
    ] = None,
    force: Annotated[
        bool | None,
        typer.Option(
            "--force/--no-force",
            help="Take over an --out that holds files longctx did not write, and discard a "
            "checkpoint there of another run (other settings, data or model content, world "
            "size, or an unsafe format) to start over. [default: off]",
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Optimizer steps (larger than a previous run = resume).")
    ] = None,
    tokens: Annotated[
        str | None, typer.Option(help="Train tokens instead of --steps, e.g. 5B.")
    ] = None,
    seq_len: Annotated[
        int | None,
        typer.Option(
            help="Training length; must divide the data's row length. [default: the data's]"
        ),
    ] = None,
    batch_tokens: Annotated[
        str | None,
        typer.Option(
            help="Global tokens per optimizer step, e.g. 4M (accumulation is derived). "
            "[default: one sequence]"
        ),
    ] = None,
    micro_batch: Annotated[
        int | None, typer.Option(help="Rows per forward pass per rank. [default: 1]")
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(help="Peak learning rate (paper: 2e-5). [default: 2e-5]", rich_help_panel=_O),
    ] = None,
    warmup_steps: Annotated[
        int | None, typer.Option(help="Linear warmup steps. [default: 0]", rich_help_panel=_O)
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(help="constant (paper) | cosine. [default: constant]", rich_help_panel=_O),
    ] = None,
    min_lr_ratio: Annotated[
        float | None,
        typer.Option(help="Cosine floor as a fraction of lr. [default: 0.1]", rich_help_panel=_O),
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="AdamW weight decay. [default: 0]", rich_help_panel=_O)
    ] = None,
    beta1: Annotated[
        float | None, typer.Option(help="AdamW beta1. [default: 0.9]", rich_help_panel=_O)
    ] = None,
    beta2: Annotated[
        float | None, typer.Option(help="AdamW beta2. [default: 0.95]", rich_help_panel=_O)
    ] = None,
    grad_clip: Annotated[
        float | None,
        typer.Option(help="Gradient norm clip, 0 = off. [default: 1.0]", rich_help_panel=_O),
    ] = None,
    rope_theta: Annotated[
        float | None,
        typer.Option(
            help="RoPE base, e.g. 500000 (Xiong et al.) or 2.08e6 (paper). [default: model's]",
            rich_help_panel=_R,
        ),
    ] = None,
    rope_type: Annotated[
        str | None,
        typer.Option(
            help="default | linear | dynamic | yarn | llama3. [default: default]",
            rich_help_panel=_R,
        ),
    ] = None,
    rope_factor: Annotated[
        float | None, typer.Option(help="Scaling factor (non-default types).", rich_help_panel=_R)
    ] = None,
    rope_original_max_positions: Annotated[
        int | None,
        typer.Option(
            help="Pre-training context (yarn, llama3; dynamic's L0). [default: model's max positions]",
            rich_help_panel=_R,
        ),
    ] = None,
    rope_low_freq_factor: Annotated[
        float | None, typer.Option(help="llama3 low_freq_factor. [default: 1]", rich_help_panel=_R)
    ] = None,
    rope_high_freq_factor: Annotated[
        float | None, typer.Option(help="llama3 high_freq_factor. [default: 4]", rich_help_panel=_R)
    ] = None,
    doc_mask: Annotated[
        str | None,
        typer.Option(
            help="none: attend across documents (paper) | mask: reset positions per document, "
            "block attention between documents and skip each document's first token in the loss. "
            "[default: none]"
        ),
    ] = None,
    save_every: Annotated[
        int | None,
        typer.Option(help="Checkpoint every K steps (0 = only at the end/signal). [default: 0]"),
    ] = None,
    keep_checkpoints: Annotated[
        int | None, typer.Option(help="Checkpoints kept. [default: 2]")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of data order and tiny init. [default: 0]")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16. [default: auto]",
            rich_help_panel=_M,
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto | cpu | cuda. [default: auto]", rich_help_panel=_M)
    ] = None,
    checkpointing: Annotated[
        bool | None,
        typer.Option(
            "--checkpointing/--no-checkpointing",
            help="Activation checkpointing. [default: on]",
            rich_help_panel=_M,
        ),
    ] = None,
    ce_chunk: Annotated[
        int | None,
        typer.Option(
            help="Tokens per cross-entropy chunk (0 = whole sequence). [default: 4096]",
            rich_help_panel=_M,
        ),
    ] = None,
    fsdp: Annotated[
        bool | None,
        typer.Option(
            "--fsdp/--no-fsdp",
            help="FSDP2 sharding (automatic under torchrun). [default: off]",
            rich_help_panel=_M,
        ),
    ] = None,
    cpu_offload: Annotated[
        bool | None,
        typer.Option(
            "--cpu-offload/--no-cpu-offload",
            help="Keep params/grads/optimizer on the host (FSDP2).",
            rich_help_panel=_M,
        ),
    ] = None,
    gpu_memory_gb: Annotated[
        float | None,
        typer.Option(
            help="Memory per GPU for the preflight check. [default: the device's]",
            rich_help_panel=_M,
        ),
    ] = None,
    preflight: Annotated[
        bool | None,
        typer.Option(
            "--preflight/--no-preflight",
            help="Refuse configs estimated not to fit. [default: on]",
            rich_help_panel=_M,
        ),
    ] = None,
    eval_data: Annotated[
        str | None, typer.Option(help="Held-out packed folder for periodic eval loss.")
    ] = None,
    eval_every: Annotated[
        int | None, typer.Option(help="Eval every K steps (and at the end). [default: 0]")
    ] = None,
    eval_rows: Annotated[
        int | None, typer.Option(help="Held-out rows per evaluation. [default: 4]")
    ] = None,
    tensorboard: Annotated[
        bool | None,
        typer.Option(
            "--tensorboard/--no-tensorboard",
            help="Also log to OUT/tensorboard (needs tensorboard).",
        ),
    ] = None,
    export_dtype: Annotated[
        str | None,
        typer.Option(help="Dtype of OUT/final: float32 | bfloat16. [default: float32]"),
    ] = None,
    tiny_layers: Annotated[
        int | None, typer.Option(help="tiny: decoder layers. [default: 2]", rich_help_panel=_T)
    ] = None,
    tiny_hidden: Annotated[
        int | None, typer.Option(help="tiny: hidden size. [default: 64]", rich_help_panel=_T)
    ] = None,
    tiny_heads: Annotated[
        int | None, typer.Option(help="tiny: attention heads. [default: 4]", rich_help_panel=_T)
    ] = None,
    tiny_kv_heads: Annotated[
        int | None, typer.Option(help="tiny: key/value heads. [default: 2]", rich_help_panel=_T)
    ] = None,
    tiny_intermediate: Annotated[
        int | None, typer.Option(help="tiny: MLP size. [default: 128]", rich_help_panel=_T)
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file with any of these keys.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override KEY=VALUE (repeatable), applied last."),
    ] = None,
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
    cfg = build_config(TrainConfig, config_file=config, cli=cli, overrides=set_ or [])
    train(cfg)
