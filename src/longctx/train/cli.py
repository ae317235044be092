"""``longctx train``: one flag per TrainConfig field, ``--config FILE`` and ``--set key=value``.

The same command runs on one process or under ``torchrun --nproc-per-node N``; rerunning
it with a larger ``--steps`` resumes from ``OUT/checkpoints/latest``.
"""

from __future__ import annotations

from longctx.cliopts import stage_command
from longctx.train.config import TrainConfig


def _train(cfg: TrainConfig) -> None:
    """Continually pretrain a causal LM on packed shards with an enlarged RoPE base.

    Writes OUT/metrics.jsonl (step, loss, lr, tokens, tokens_per_s), OUT/checkpoints/,
    OUT/final/ (plain HF model) and OUT/manifest.json. Multi-GPU: torchrun --nproc-per-node N
    -m longctx train ... (same flags).
    """
    from longctx.train.loop import train

    train(cfg)


train_command = stage_command(TrainConfig, _train, config_help="YAML file with any of these keys.",
                              set_help="Override KEY=VALUE (repeatable), applied last.")
