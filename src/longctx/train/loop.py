"""The training loop, top to bottom: setup, resume, steps, checkpoints, export, manifest.

One function, :func:`train`, read in order:

1. process group and device; data rows; the model with its RoPE set in the config
2. preflight memory estimate (refuses configs that cannot fit, with the numbers)
3. activation checkpointing, FSDP2 sharding (optional), AdamW
4. resume from ``OUT/checkpoints/latest`` when present (same command, larger ``--steps``)
5. for each step: gradient accumulation over this rank's micro-batches, clip, step, log
6. checkpoints every ``save_every`` steps and on SIGTERM/SIGINT; held-out loss every
   ``eval_every`` steps
7. final checkpoint, HF export in ``OUT/final/``, ``OUT/manifest.json``
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from longctx.errors import LongctxError
from longctx.stage import Timer, read_manifest, run_hash, sha256_file, write_manifest
from longctx.train import checkpoint as ckpt
from longctx.train import distributed as distrib
from longctx.train.config import TrainConfig
from longctx.train.loader import GlobalSampler, TrainRows, micro_batches
from longctx.train.memory import estimate, gpu_memory_bytes, preflight
from longctx.train.model import CausalLMWithLoss, build_model, count_parameters


class TrainError(LongctxError):
    pass


def enable_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing per decoder layer (API renamed in transformers 5.2x)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warmup, then constant (the paper's) or cosine down to ``min_lr_ratio * lr``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checkpoints at the end of the current step and exits."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _to_tensors(batch: Any, device: Any) -> tuple[Any, Any, Any]:
    import torch

    ids = torch.from_numpy(batch.input_ids).to(device, non_blocking=True)
    tgt = torch.from_numpy(batch.targets).to(device, non_blocking=True)
    pos = None
    if batch.position_ids is not None:
        pos = torch.from_numpy(batch.position_ids).to(device, non_blocking=True)
    return ids, pos, tgt


def evaluate(wrapper: Any, rows: TrainRows, n: int, d: distrib.Dist, autocast: Any) -> float:
    """Mean next-token loss over the first ``n`` rows of the held-out set (split over ranks)."""
    import torch

    n = min(n, len(rows))
    per_rank = -(-n // d.world)  # every rank runs the same number of forwards (FSDP collectives)
    total = count = 0.0
    wrapper.eval()
    with torch.no_grad():
        for k in range(per_rank):
            i = d.rank + k * d.world
            tensors = _to_tensors(rows.batch([i if i < n else 0]), d.device)
            with autocast():
                s, c = wrapper(*tensors)
            if i < n:  # padding forwards are not counted
                total += float(s)
                count += float(c)
    wrapper.train()
    total = distrib.all_reduce_sum(total, d)
    count = distrib.all_reduce_sum(count, d)
    return total / max(count, 1.0)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training as configured; returns the manifest written to ``OUT``."""
    import torch

    out = Path(cfg.out)
    total_steps = cfg.resolved_steps()
    seq_len = cfg.resolved_seq_len()
    batch_tokens = cfg.resolved_batch_tokens()
    cfg_hash = run_hash(cfg)  # config + identity of the data and model it reads
    done = read_manifest(out)
    if done and done.get("stage") == "train" and done.get("status") == "done" \
            and done.get("config_hash") == cfg_hash:
        print(f"train: {out} is done with the same config and inputs (hash {cfg_hash}); skipping")
        return done

    # 1. processes, data, model ---------------------------------------------------------
    d = distrib.setup(cfg.device, need_group=cfg.fsdp or cfg.cpu_offload)
    torch.manual_seed(cfg.seed + d.rank)
    on_gpu = d.device.type == "cuda"
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and on_gpu)
    rows = TrainRows(cfg.data, seq_len, cfg.doc_mask)
    rows_per_step = batch_tokens // seq_len
    if rows_per_step % (d.world * cfg.micro_batch):
        raise TrainError(
            f"config key 'batch_tokens': {batch_tokens} tokens = {rows_per_step} rows per step, "
            f"not a multiple of world size {d.world} x micro_batch {cfg.micro_batch}"
        )
    accum = rows_per_step // (d.world * cfg.micro_batch)
    model, tok_dir, rope_params = build_model(cfg, device_type=d.device.type)
    n_params = count_parameters(model)

    # 2. preflight ------------------------------------------------------------------------
    sharded = d.sharded
    est = estimate(model.config, params=n_params, seq_len=seq_len, micro_batch=cfg.micro_batch,
                   world=d.world, fsdp=sharded, cpu_offload=cfg.cpu_offload,
                   checkpointing=cfg.checkpointing, ce_chunk=cfg.ce_chunk)
    available = cfg.gpu_memory_gb * 1024**3 if cfg.gpu_memory_gb else gpu_memory_bytes(d.device)
    if cfg.preflight:
        preflight(est, available, what=f"model {cfg.model} at seq_len {seq_len}")

    # 3. memory features, sharding, optimizer -------------------------------------------
    if cfg.checkpointing:
        enable_checkpointing(model)
    wrapper = CausalLMWithLoss(model, cfg.ce_chunk)
    if sharded:
        distrib.shard(wrapper, list(model.model.layers), bf16=bf16,
                      cpu_offload=cfg.cpu_offload, device=d.device)
    else:
        wrapper.to(d.device)
    autocast_bf16 = bf16 and not sharded  # FSDP's MixedPrecisionPolicy casts instead

    def autocast() -> Any:
        if autocast_bf16:
            return torch.autocast(d.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    decay = [p for n, p in wrapper.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in wrapper.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8,
        foreach=not cfg.cpu_offload,
    )

    # 4. resume ----------------------------------------------------------------------------
    sampler = GlobalSampler(len(rows), rows_per_step, cfg.seed)
    start_step, tokens_seen = 0, 0
    latest, trainer_state = ckpt.read_trainer_state(out, d)
    if latest is not None:
        if trainer_state.get("resume_key") != cfg.resume_view():
            raise TrainError(
                f"{out} holds a checkpoint of a different run (differs in "
                f"{_diff_keys(trainer_state.get('resume_key') or {}, cfg.resume_view())}); "
                f"use another --out or the same settings"
            )
        trainer_state = ckpt.load_checkpoint(latest, wrapper, optimizer, d)
        sampler.load_state_dict(trainer_state["sampler"])
        start_step, tokens_seen = int(trainer_state["step"]), int(trainer_state["tokens"])
        if d.is_main:
            print(f"train: resumed from {latest} at step {start_step}")
    metrics_path = out / "metrics.jsonl"
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(metrics_path, start_step)
        write_manifest(out, _manifest(cfg, cfg_hash, "running", rope_params, n_params, est,
                                      start_step, tokens_seen, d.world, {}))
        print(f"train: {cfg.model} ({n_params / 1e6:.1f}M params), seq_len {seq_len}, "
              f"{rows_per_step} rows/step = {accum} accum x {cfg.micro_batch} micro x {d.world} "
              f"ranks, rope {rope_params}, preflight {est.describe()}")
    writer = _tensorboard(out, cfg) if d.is_main else None
    eval_rows = TrainRows(cfg.eval_data, seq_len, cfg.doc_mask) if cfg.eval_data else None

    # 5. steps -----------------------------------------------------------------------------
    last: dict[str, Any] = {}
    interrupted = None
    with Timer() as wall, StopFlag() as stop:
        for step in range(start_step, total_steps):
            t0 = time.perf_counter()
            lr = lr_at(step, cfg, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            my_rows = sampler.rank_rows(step, d.rank, d.world)
            batches = [rows.batch(m) for m in micro_batches(my_rows, cfg.micro_batch)]
            scored = distrib.all_reduce_sum(sum(b.scored for b in batches), d)
            loss_sum = 0.0
            for k, batch in enumerate(batches):
                if sharded:
                    wrapper.set_requires_gradient_sync(k == len(batches) - 1)
                with autocast():
                    s, _ = wrapper(*_to_tensors(batch, d.device))
                # sum / global count; FSDP averages gradients over ranks, so scale by world
                (s * (d.world / max(scored, 1.0))).backward()
                loss_sum += float(s.detach())
            grad_norm = None
            if cfg.grad_clip > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(wrapper.parameters(),
                                                                 cfg.grad_clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sampler.step = step + 1
            loss = distrib.all_reduce_sum(loss_sum, d) / max(scored, 1.0)
            tokens_seen += rows_per_step * seq_len
            dt = time.perf_counter() - t0
            last = {"step": step + 1, "loss": loss, "lr": lr, "tokens": tokens_seen,
                    "tokens_per_s": rows_per_step * seq_len / dt, "grad_norm": grad_norm,
                    "seconds": dt}
            if on_gpu:
                last["gpu_mem_gb"] = torch.cuda.max_memory_allocated(d.device) / 1024**3
            if eval_rows is not None and cfg.eval_every and (step + 1) % cfg.eval_every == 0:
                last["eval_loss"] = evaluate(wrapper, eval_rows, cfg.eval_rows, d, autocast)
            if d.is_main:
                _log(metrics_path, last, total_steps, writer)
            # 6. checkpoints ---------------------------------------------------------------
            stopping = distrib.all_reduce_sum(1.0 if stop.signum else 0.0, d) > 0
            if (cfg.save_every and (step + 1) % cfg.save_every == 0) or stopping:
                ckpt.save_checkpoint(out, step + 1, wrapper, optimizer,
                                     _trainer(cfg, sampler, tokens_seen), d, cfg.keep_checkpoints)
            if stopping:
                interrupted = stop.signum or signal.SIGTERM
                break

    if interrupted is not None:
        if d.is_main:
            print(f"train: stopped by signal {interrupted} after step {sampler.step}; rerun the "
                  f"same command to resume")
            write_manifest(out, _manifest(cfg, cfg_hash, "interrupted", rope_params, n_params,
                                          est, sampler.step, tokens_seen, d.world, last))
        distrib.teardown(d)
        sys.exit(128 + int(interrupted))

    # 7. final checkpoint, export, manifest ------------------------------------------------
    if eval_rows is not None and "eval_loss" not in last and last:
        last["eval_loss"] = evaluate(wrapper, eval_rows, cfg.eval_rows, d, autocast)
    latest_now = ckpt.latest_checkpoint(out) if d.is_main else None
    latest_now = distrib.broadcast_object(str(latest_now) if latest_now else None, d)
    if latest_now is None or not latest_now.endswith(f"step_{sampler.step:08d}"):
        ckpt.save_checkpoint(out, sampler.step, wrapper, optimizer,
                             _trainer(cfg, sampler, tokens_seen), d, cfg.keep_checkpoints)
    files = ckpt.export_hf(model, wrapper, tok_dir, out / "final", d, cfg.export_dtype)
    manifest: dict[str, Any] = {}
    if d.is_main:
        final = out / "final"
        export = {"dir": "final", "files": files,
                  "sha256": {f: sha256_file(final / f) for f in files
                             if f.endswith((".safetensors", ".json"))}}
        manifest = _manifest(cfg, cfg_hash, "done", rope_params, n_params, est, sampler.step,
                             tokens_seen, d.world, last, export=export, seconds=wall.wall)
        write_manifest(out, manifest)
        if writer is not None:
            writer.close()
    distrib.teardown(d)
    return manifest


# ------------------------------------------------------------------------------ helpers
def _trainer(cfg: TrainConfig, sampler: GlobalSampler, tokens: int) -> dict[str, Any]:
    return {"tokens": tokens, "sampler": sampler.state_dict(), "resume_key": cfg.resume_view()}


def _diff_keys(a: dict[str, Any], b: dict[str, Any]) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys) or "unknown keys"


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines past the resume step, so a resumed run appends without duplicates."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines()
            if ln.strip() and json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in keep))


def _log(path: Path, rec: dict[str, Any], total: int, writer: Any) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    line = (f"step {rec['step']}/{total} | loss {rec['loss']:.4f} | lr {rec['lr']:.2e} | "
            f"tokens {rec['tokens']:,} | {rec['tokens_per_s']:,.0f} tok/s")
    if rec.get("grad_norm") is not None:
        line += f" | gnorm {rec['grad_norm']:.3f}"
    if "gpu_mem_gb" in rec:
        line += f" | mem {rec['gpu_mem_gb']:.1f} GiB"
    if "eval_loss" in rec:
        line += f" | eval {rec['eval_loss']:.4f}"
    print(line, flush=True)
    if writer is not None:
        for k in ("loss", "lr", "tokens_per_s", "eval_loss", "grad_norm"):
            if rec.get(k) is not None:
                writer.add_scalar(f"train/{k}", rec[k], rec["step"])


def _tensorboard(out: Path, cfg: TrainConfig) -> Any:
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise TrainError(
            f"config key 'tensorboard': true needs the tensorboard package ({e})"
        ) from None
    return SummaryWriter(str(out / "tensorboard"))


def _manifest(cfg: TrainConfig, cfg_hash: str, status: str, rope: dict, params: int, est: Any,
              step: int, tokens: int, world: int, last: dict, export: dict | None = None,
              seconds: float | None = None) -> dict[str, Any]:
    return {
        "stage": "train",
        "status": status,
        "config": asdict(cfg),
        "config_hash": cfg_hash,
        "model": cfg.model,
        "data": str(cfg.data),
        "data_tokenizer": (cfg.data_manifest.get("tokenizer") or {}),
        "rope_parameters": rope,
        "seq_len": cfg.resolved_seq_len(),
        "batch_tokens": cfg.resolved_batch_tokens(),
        "parameters": params,
        "world_size": world,
        "steps": step,
        "tokens": tokens,
        "final_loss": last.get("loss"),
        "final_eval_loss": last.get("eval_loss"),
        "memory_estimate_bytes": est.as_dict(),
        "export": export,
        "seconds": seconds,
    }
