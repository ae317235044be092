"""The training loop, top to bottom: setup, resume, steps, checkpoints, export, manifest.

One function, :func:`train`, read in order:

0. the output folder: rank 0 locks it (:func:`longctx.stage.stage_output`), and a checkpoint
   there of another run (other settings, other data or model content, another world size,
   an unreadable or pickle-based format) is refused, or discarded with ``--force``
1. process group and device; data rows; the model with its RoPE set in the config
2. preflight memory estimate (refuses configs that cannot fit, with the numbers)
3. the fast paths of ``fastpaths.py`` (checkpointing by policy, activation offload,
   regional compilation), FSDP2 sharding (optional), AdamW
4. resume from ``OUT/checkpoints/latest`` when present (same command, larger ``--steps``)
5. for each step: gradient accumulation over this rank's micro-batches, clip, and a
   non-finite loss or gradient check *before* the optimizer step (a divergence stops with a
   checkpoint of the last finite state, status ``failed`` and a one-line error), step, log
6. checkpoints every ``save_every`` steps and on SIGTERM/SIGINT; every ``eval_every`` steps
   (and at the last step) the held-out loss, and the evaluation of ``evaluate.py`` (loss by
   position bucket, a needle grid) in the step's ``eval`` field of ``metrics.jsonl``
7. final checkpoint, HF export in ``OUT/final/``, ``OUT/manifest.json``
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from longctx.dtypes import resolve_dtype
from longctx.errors import LongctxError
from longctx.stage import (
    Timer,
    read_manifest,
    run_hash,
    sha256_file,
    stage_output,
    write_manifest,
)
from longctx.train import checkpoint as ckpt
from longctx.train import distributed as distrib
from longctx.train.config import EVAL_STAGES, TrainConfig
from longctx.train.evaluate import TrainingEval, describe_cost
from longctx.train.fastpaths import FastPathError, prepare_model
from longctx.train.loader import GlobalSampler, TrainRows, micro_batches
from longctx.train.memory import estimate, gpu_memory_bytes, preflight
from longctx.train.model import CausalLMWithLoss, build_model, count_parameters


class TrainError(LongctxError):
    pass


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
    out = Path(cfg.out)
    cfg_hash = run_hash(dataclasses.replace(cfg, force=False))  # config + data/model identity
    done = read_manifest(out)
    if done and done.get("stage") == "train" and done.get("status") == "done" \
            and done.get("config_hash") == cfg_hash:
        print(f"train: {out} is done with the same config and inputs (hash {cfg_hash}); skipping")
        return done
    d = distrib.setup(cfg.device, need_group=cfg.fsdp or cfg.cpu_offload)
    try:
        with _claim_output(cfg, out, d):
            return _run(cfg, out, cfg_hash, d)
    finally:
        distrib.teardown(d)


@contextlib.contextmanager
def _claim_output(cfg: TrainConfig, out: Path, d: distrib.Dist) -> Any:
    """Rank 0 holds the lock on ``out`` for the whole run; a refusal is raised on every rank."""
    inputs = (cfg.data, cfg.eval_data, cfg.model if cfg.model_is_folder else None)
    with contextlib.ExitStack() as stack:
        error = None
        if d.is_main:
            try:
                stack.enter_context(stage_output(out, "train", force=cfg.force, inputs=inputs))
            except LongctxError as e:
                error = str(e)
        error = distrib.broadcast_object(error, d)
        if error:
            raise TrainError(error)
        yield


def _run(cfg: TrainConfig, out: Path, cfg_hash: str, d: distrib.Dist) -> dict[str, Any]:
    """The run itself, steps 0-7 of the module docstring (``out`` is claimed by the caller)."""
    import torch

    total_steps = cfg.resolved_steps()
    seq_len = cfg.resolved_seq_len()
    batch_tokens = cfg.resolved_batch_tokens()
    # 0. the checkpoint to resume: this run's own, or refused/discarded before any heavy work
    resume_key = cfg.resume_key()
    latest, _ = _resume_point(cfg, out, resume_key, d)

    # 1. processes, data, model ---------------------------------------------------------
    torch.manual_seed(cfg.seed + d.rank)
    on_gpu = d.device.type == "cuda"
    bf16 = resolve_dtype(cfg.precision, d.device) == torch.bfloat16
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
                   checkpointing=cfg.checkpointing, ce_chunk=cfg.ce_chunk,
                   checkpoint_policy=cfg.checkpoint_policy,
                   activation_offload=cfg.activation_offload, ce_impl=cfg.ce_impl)
    available = cfg.gpu_memory_gb * 1024**3 if cfg.gpu_memory_gb else gpu_memory_bytes(d.device)
    if cfg.preflight:
        preflight(est, available, what=f"model {cfg.model} at seq_len {seq_len}")

    # 3. memory features, sharding, optimizer -------------------------------------------
    try:
        prepare_model(model, cfg, device_type=d.device.type)
    except FastPathError as e:
        raise TrainError(str(e)) from None
    wrapper = CausalLMWithLoss(model, cfg.ce_chunk, cfg.ce_impl)
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
    if latest is not None:
        trainer_state = ckpt.load_checkpoint(latest, wrapper, optimizer, d)
        sampler.load_state_dict(trainer_state["sampler"])
        start_step, tokens_seen = int(trainer_state["step"]), int(trainer_state["tokens"])
        if d.is_main:
            print(f"train: resumed from {latest} at step {start_step}")
    last: dict[str, Any] = {}
    fast = fast_paths(cfg, model)

    def manifest(status: str, **extra: Any) -> dict[str, Any]:
        return _manifest(cfg, cfg_hash, status, rope_params, n_params, est, sampler.step,
                         tokens_seen, d.world, last, resume_key, fast, **extra)

    metrics_path = out / "metrics.jsonl"
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(metrics_path, start_step)
        write_manifest(out, manifest("running"))
        print(f"train: {cfg.model} ({n_params / 1e6:.1f}M params), seq_len {seq_len}, "
              f"{rows_per_step} rows/step = {accum} accum x {cfg.micro_batch} micro x {d.world} "
              f"ranks, rope {rope_params}, preflight {est.describe()}")
    writer = _tensorboard(out, cfg) if d.is_main else None
    eval_rows = TrainRows(cfg.eval_data, seq_len, cfg.doc_mask, stages=EVAL_STAGES) \
        if cfg.eval_data else None
    in_training = TrainingEval.build(cfg, tok_dir, seq_len, d.world, d.is_main) \
        if cfg.eval_data and cfg.eval_every else None

    # 5. steps -----------------------------------------------------------------------------
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
            loss = distrib.all_reduce_sum(loss_sum, d) / max(scored, 1.0)
            if not (math.isfinite(loss) and (grad_norm is None or math.isfinite(grad_norm))):
                # diverged: do not step; keep the weights that gave finite losses so far
                optimizer.zero_grad(set_to_none=True)
                what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {grad_norm}"
                _stop_diverged(out, step, what, wrapper, optimizer,
                               _trainer(cfg, sampler, tokens_seen, resume_key), d,
                               cfg.keep_checkpoints, manifest)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sampler.step = step + 1
            tokens_seen += rows_per_step * seq_len
            dt = time.perf_counter() - t0
            if in_training is not None:
                in_training.cost.train_s += dt
            last = {"step": step + 1, "loss": loss, "lr": lr, "tokens": tokens_seen,
                    "tokens_per_s": rows_per_step * seq_len / dt, "grad_norm": grad_norm,
                    "seconds": dt}
            if on_gpu:
                last["gpu_mem_gb"] = torch.cuda.max_memory_allocated(d.device) / 1024**3
            due = cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == total_steps)
            t_eval = time.perf_counter()
            if eval_rows is not None and due:
                last["eval_loss"] = _finite_or_none(
                    evaluate(wrapper, eval_rows, cfg.eval_rows, d, autocast))
            if in_training is not None and due:
                last["eval"] = in_training.run(wrapper, sharded, d.device, autocast)
                last["eval"]["eval_s"] = time.perf_counter() - t_eval  # eval_loss included
                in_training.cost.eval_s += last["eval"]["eval_s"]
            if d.is_main:
                _log(metrics_path, last, total_steps, writer)
                if "eval" in last:
                    print(describe_cost(step + 1, last["eval"], in_training.cost), flush=True)
            # 6. checkpoints ---------------------------------------------------------------
            stopping = distrib.all_reduce_sum(1.0 if stop.signum else 0.0, d) > 0
            if (cfg.save_every and (step + 1) % cfg.save_every == 0) or stopping:
                ckpt.save_checkpoint(out, step + 1, wrapper, optimizer,
                                     _trainer(cfg, sampler, tokens_seen, resume_key), d,
                                     cfg.keep_checkpoints)
            if stopping:
                interrupted = stop.signum or signal.SIGTERM
                break

    if interrupted is not None:
        if d.is_main:
            print(f"train: stopped by signal {interrupted} after step {sampler.step}; rerun the "
                  f"same command to resume")
            write_manifest(out, manifest("interrupted"))
        sys.exit(128 + int(interrupted))  # train() tears the process group down

    # 7. final checkpoint, export, manifest ------------------------------------------------
    if eval_rows is not None and "eval_loss" not in last and last:
        last["eval_loss"] = _finite_or_none(evaluate(wrapper, eval_rows, cfg.eval_rows, d,
                                                     autocast))
    latest_now = ckpt.latest_checkpoint(out) if d.is_main else None
    latest_now = distrib.broadcast_object(str(latest_now) if latest_now else None, d)
    if latest_now is None or not latest_now.endswith(f"step_{sampler.step:08d}"):
        ckpt.save_checkpoint(out, sampler.step, wrapper, optimizer,
                             _trainer(cfg, sampler, tokens_seen, resume_key), d,
                             cfg.keep_checkpoints)
    files = ckpt.export_hf(model, wrapper, tok_dir, out / "final", d, cfg.export_dtype)
    result: dict[str, Any] = {}
    if d.is_main:
        final = out / "final"
        export = {"dir": "final", "files": files,
                  "sha256": {f: sha256_file(final / f) for f in files
                             if f.endswith((".safetensors", ".json"))}}
        result = manifest("done", export=export, seconds=wall.wall)
        write_manifest(out, result)
        if writer is not None:
            writer.close()
    return result


# ------------------------------------------------------------------------------ helpers
def fast_paths(cfg: TrainConfig, model: Any) -> dict[str, Any]:
    """What the steps ran with, as resolved (``attention`` auto becomes the kernel used)."""
    return {"ce_impl": cfg.ce_impl,
            "checkpointing": cfg.checkpoint_policy if cfg.checkpointing else "off",
            "activation_offload": cfg.activation_offload, "compile": cfg.compile,
            "attention": model.config._attn_implementation}


def _trainer(cfg: TrainConfig, sampler: GlobalSampler, tokens: int,
             resume_key: dict[str, Any]) -> dict[str, Any]:
    return {"tokens": tokens, "sampler": sampler.state_dict(), "resume_key": resume_key}


# files and folders a train run writes into OUT (what ``--force`` discards)
RUN_FILES = ("checkpoints", "final", "final.tmp", "metrics.jsonl", "tensorboard", "manifest.json")


def _resume_point(cfg: TrainConfig, out: Path, key: dict[str, Any],
                  d: distrib.Dist) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint to resume from (or None), refusing one of another run unless ``--force``.

    "Another run" means other settings, data or model *content* (not paths), another world
    size, or a checkpoint this version cannot read safely; with ``--force`` the old run's
    checkpoints, metrics and export are discarded and training starts over.
    """
    problem = None
    try:
        latest, state = ckpt.read_trainer_state(out, d)
        if latest is not None and state.get("resume_key") != key:
            problem = (f"{out} holds a checkpoint of a different run "
                       f"({_describe_change(state.get('resume_key'), key, cfg)})")
        elif latest is None:  # no checkpoint, but maybe a finished model of another run
            previous = read_manifest(out) or {}
            if previous.get("stage") == "train" and previous.get("steps") and \
                    previous.get("resume_key") != key and (out / "final").exists():
                problem = (f"{out} holds a model trained by a different run "
                           f"({_describe_change(previous.get('resume_key'), key, cfg)})")
    except ckpt.CheckpointError as e:
        latest, state, problem = None, None, str(e)
    if problem is None:
        return latest, state
    if not cfg.force:
        raise TrainError(f"{problem}; rerun with the same settings, use another --out, or pass "
                         f"--force to discard it and start over")
    if d.is_main:
        print(f"train: --force: {problem}; discarding it and starting over")
        for name in RUN_FILES:
            p = out / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    distrib.barrier(d)
    return None, None


def _describe_change(old: Any, new: dict[str, Any], cfg: TrainConfig) -> str:
    """What differs between two resume keys, in words (content changes named as such)."""
    old = old if isinstance(old, dict) else {}
    parts = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if k == "data_identity":
            parts.append(f"the data in {cfg.data} changed (content identity {a} -> {b})")
        elif k == "model_identity":
            parts.append(f"the model {cfg.model} changed (content identity {a} -> {b})")
        else:
            parts.append(f"{k}: {a!r} -> {b!r}")
    return ", ".join(parts) or "unknown keys"


def _stop_diverged(out: Path, step: int, what: str, wrapper: Any, optimizer: Any,
                   trainer: dict[str, Any], d: distrib.Dist, keep: int, manifest: Any) -> None:
    """Step ``step`` gave a non-finite loss or gradient: checkpoint, mark failed, raise."""
    saved = None
    if _all_finite(wrapper, d):  # the weights that produced every finite loss so far
        saved = ckpt.save_checkpoint(out, step, wrapper, optimizer, trainer, d, keep)
    reason = f"non-finite {what} at step {step + 1}; the optimizer step was skipped"
    where = (f"the last finite state (after step {step}) is checkpointed in {saved}" if saved
             else "the weights are no longer finite, so no checkpoint was written")
    if d.is_main:
        write_manifest(out, manifest("failed", reason=reason))
    raise TrainError(f"training diverged: {reason}; {where}; lower --lr (or check the data) "
                     f"and rerun")


def _all_finite(wrapper: Any, d: distrib.Dist) -> bool:
    import torch

    bad = 0.0
    with torch.no_grad():
        for p in wrapper.parameters():
            if not bool(torch.isfinite(ckpt.local_tensor(p)).all()):
                bad = 1.0
                break
    return distrib.all_reduce_sum(bad, d) == 0


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines past the resume step, so a resumed run appends without duplicates.

    A torn line (a run killed while writing it) or any line that is not a metrics record
    is dropped too.
    """
    if not path.is_file():
        return
    keep = []
    for ln in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(ln)
        except (ValueError, RecursionError):
            continue
        s = rec.get("step") if isinstance(rec, dict) else None
        if isinstance(s, int) and not isinstance(s, bool) and 0 < s <= step:
            keep.append(ln)
    path.write_text("".join(ln + "\n" for ln in keep))


def _log(path: Path, rec: dict[str, Any], total: int, writer: Any) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec, allow_nan=False) + "\n")
    line = (f"step {rec['step']}/{total} | loss {rec['loss']:.4f} | lr {rec['lr']:.2e} | "
            f"tokens {rec['tokens']:,} | {rec['tokens_per_s']:,.0f} tok/s")
    if rec.get("grad_norm") is not None:
        line += f" | gnorm {rec['grad_norm']:.3f}"
    if "gpu_mem_gb" in rec:
        line += f" | mem {rec['gpu_mem_gb']:.1f} GiB"
    if rec.get("eval_loss") is not None:
        line += f" | eval {rec['eval_loss']:.4f}"
    print(line, flush=True)
    if writer is not None:
        for k in ("loss", "lr", "tokens_per_s", "eval_loss", "grad_norm"):
            if rec.get(k) is not None:
                writer.add_scalar(f"train/{k}", rec[k], rec["step"])
        ev = rec.get("eval") or {}
        for bucket, v in (ev.get("loss_by_bucket") or {}).items():
            if v is not None:
                writer.add_scalar(f"eval/loss_{bucket}", v, rec["step"])
        if ev.get("needle"):
            writer.add_scalar("eval/needle", ev["needle"]["average"], rec["step"])


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
              step: int, tokens: int, world: int, last: dict, resume_key: dict[str, Any],
              fast: dict[str, Any], export: dict | None = None, seconds: float | None = None,
              reason: str | None = None) -> dict[str, Any]:
    out = {
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
        "resume_key": resume_key,
        "fast_paths": fast,
        "export": export,
        "seconds": seconds,
    }
    if reason is not None:
        out["reason"] = reason
    return out
