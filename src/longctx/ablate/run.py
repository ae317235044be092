"""Run every arm x seed through the existing stages, each in its own folder.

Layout of ``DIR``::

    DIR/manifest.json                      the ablation's own (stage "ablate", lock holder)
    DIR/arms/<arm>/seed<k>/data            ``data build`` (mixture + packing)
    DIR/arms/<arm>/seed<k>/train           ``train`` (final/ is the model evaluated)
    DIR/arms/<arm>/seed<k>/{loss,needle}   ``eval loss`` on the common held-out set, ``eval needle``
    DIR/base/{loss,needle}                 the base model as shipped (``eval.base``)
    DIR/ablation.json, DIR/report.html

All builds run first (they are cheap next to training, and a data problem should surface
before hours of training), then each arm x seed trains and is evaluated. Every stage skips
itself when its manifest says done with the same config and inputs, so a rerun reuses
finished work and an interrupted run resumes; nothing here keeps state of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longctx.ablate.config import HELDOUT_AUTO, HELDOUT_TRAIN_ROWS, AblationConfig, Arm
from longctx.ablate.summary import summarize
from longctx.data.readers import expand_inputs
from longctx.errors import LongctxError
from longctx.stage import (
    config_hash,
    is_done,
    manifest_bytes,
    read_manifest,
    run_hash,
    stage_output,
    write_json_atomic,
    write_manifest,
)

STAGE = "ablate"


class AblationError(LongctxError):
    """The ablation cannot go on; the message names the arm, seed and stage."""


@dataclass
class Unit:
    """One arm at one seed: its four stage folders."""

    arm: Arm
    seed: int
    root: Path

    @property
    def label(self) -> str:
        return f"{self.arm.name} seed {self.seed}"

    def folder(self, stage: str) -> Path:
        return self.root / stage


def plan_units(cfg: AblationConfig) -> list[Unit]:
    out = Path(cfg.out)
    return [Unit(arm, seed, out / "arms" / arm.name / f"seed{seed}")
            for arm in cfg.arm_list() for seed in cfg.seed_list()]


class StageLog:
    """One console line per stage start and finish (arm, seed, seconds, ran or reused)."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.timings: dict[str, dict[str, Any]] = {}

    def run(self, where: str, stage: str, folder: Path, fn: Callable[[], Any]) -> Any:
        before = manifest_bytes(folder)
        self.echo(f"ablate: {where}: {stage} started")
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        reused = before is not None and manifest_bytes(folder) == before
        status = "reused" if reused else "ran"
        self.timings.setdefault(where, {})[stage] = {"status": status, "seconds": round(dt, 3)}
        self.echo(f"ablate: {where}: {stage} {'reused' if reused else 'finished'} "
                  f"in {dt:.1f} s")
        return result


def run_ablation(cfg: AblationConfig, *, echo: Callable[[str], None] = print,
                 progress: bool | None = False) -> dict[str, Any]:
    """Run (or resume) the whole ablation; writes and returns ``ablation.json``'s content."""
    out = Path(cfg.out)
    expand_inputs(cfg.corpus.inputs)  # a missing corpus fails now, not after the first arm
    units = plan_units(cfg)
    record = cfg.record()
    with stage_output(out, STAGE, inputs=cfg.corpus.inputs):
        t0 = time.perf_counter()
        write_manifest(out, {"stage": STAGE, "status": "running", "config": record,
                             "config_hash": config_hash(record)})
        log = StageLog(echo)
        echo(f"ablate: {len(cfg.arms)} arm(s) x {len(cfg.seed_list())} seed(s) -> {out}")
        for k, unit in enumerate(units):
            _build(cfg, unit, log, progress)
            if k == 0:
                _check_domains(cfg, unit)
        heldout = resolve_heldout(cfg, units[0])
        for unit in units:
            _train_and_eval(cfg, unit, heldout, log, progress)
        base = _base_evals(cfg, heldout, log, progress) if cfg.eval.base else None
        result = summarize(cfg, units, heldout, base)
        result["timings"] = {"stages": log.timings,
                             "total_seconds": round(time.perf_counter() - t0, 3)}
        write_json_atomic(out / "ablation.json", result)
        report = _write_report(out)
        write_manifest(out, {"stage": STAGE, "status": "done", "config": record,
                             "config_hash": config_hash(record),
                             "outputs": ["ablation.json", report.name]})
    for line in result["verdicts"]:
        echo(f"verdict: {line}")
    echo(f"ablate: wrote {out / 'ablation.json'} and {report}")
    return result


# ------------------------------------------------------------------------------ stages


def _build(cfg: AblationConfig, unit: Unit, log: StageLog, progress: bool | None) -> None:
    from longctx.pack.build import run_build

    bc = cfg.build_config(unit.arm, unit.seed, unit.folder("data"))
    log.run(unit.label, "build", unit.folder("data"), lambda: run_build(bc, progress=progress))


def _check_domains(cfg: AblationConfig, unit: Unit) -> None:
    """Arms naming a domain the corpus lacks fail after the first build, not mid-ablation."""
    vocab = (read_manifest(unit.folder("data")) or {}).get("domain_vocab") or []
    for arm in cfg.arm_list():
        for key in ("mix", "upsample"):
            unknown = sorted(set(getattr(arm, key)) - set(vocab))
            if unknown:
                raise AblationError(
                    f"arms.{arm.name}.{key}: domain(s) {', '.join(unknown)} not in the corpus "
                    f"(found: {', '.join(vocab)})"
                )


def _train_and_eval(cfg: AblationConfig, unit: Unit, heldout: dict[str, Any], log: StageLog,
                    progress: bool | None) -> None:
    from longctx.train.loop import train

    bc = cfg.build_config(unit.arm, unit.seed, unit.folder("data"))
    tc = cfg.train_config(unit.arm, unit.seed, unit.folder("data"), unit.folder("train"))
    tc.validate()
    log.run(unit.label, "train", unit.folder("train"), lambda: train(tc))
    model = unit.folder("train") / "final"
    _evals(cfg, unit.label, unit.root, model, heldout, trained_length(tc, bc), log, progress)


def trained_length(tc: Any, bc: Any) -> int:
    """The training length (train.seq_len, else the packed row length): the needle plot's line."""
    return int(tc.seq_len or bc.seq_len)


def _evals(cfg: AblationConfig, where: str, root: Path, model: str | Path,
           heldout: dict[str, Any], trained_length: int | None, log: StageLog,
           progress: bool | None) -> None:
    """``eval loss`` on the common held-out set and ``eval needle``, skipped when done."""
    from longctx.eval.loss import loss_run_hash, run_loss
    from longctx.eval.needle import run_needle

    if cfg.eval.loss is not None:
        lc = cfg.loss_config(model, heldout["data"])
        folder = root / "loss"
        log.run(where, "loss", folder,
                lambda: None if is_done(folder, loss_run_hash(lc)) else run_loss(lc, folder,
                                                                            progress=progress))
        _check_split(folder, heldout, where)
    if cfg.eval.needle is not None:
        nc = cfg.needle_config(model, trained_length)
        folder = root / "needle"
        log.run(where, "needle", folder,
                lambda: None if is_done(folder, run_hash(nc)) else run_needle(nc, folder,
                                                                              progress=progress))


def _base_evals(cfg: AblationConfig, heldout: dict[str, Any], log: StageLog,
                progress: bool | None) -> Path:
    root = Path(cfg.out) / "base"
    _evals(cfg, "base model", root, cfg.model, heldout, None, log, progress)
    return root


def _check_split(folder: Path, heldout: dict[str, Any], where: str) -> None:
    """The loss must have read the rows the ablation meant (held-out when it says so)."""
    import json

    try:
        split = json.loads((folder / "loss.json").read_text()).get("split", "train")
    except (OSError, ValueError):
        raise AblationError(f"{where}: {folder / 'loss.json'} is missing or unreadable") from None
    if heldout["split"] == "heldout" and split != "heldout":
        raise AblationError(f"{where}: eval loss scored {split!r} rows, not the held-out set "
                            f"{heldout['data']}")


# ------------------------------------------------------------------------------ held-out


def resolve_heldout(cfg: AblationConfig, first: Unit) -> dict[str, Any]:
    """The ONE evaluation set of every arm and seed, with a content digest.

    ``data`` is what ``eval loss`` is given, ``scored`` the packed folder it reads (a build's
    held-out part when it has one: the rule of ``eval.loss.resolve_split``, used here too).
    """
    from longctx.eval.loss import resolve_split

    mode = cfg.eval.heldout
    data = first.folder("data") if mode in (HELDOUT_AUTO, HELDOUT_TRAIN_ROWS) else Path(mode)
    if read_manifest(data) is None:
        raise AblationError(f"eval.heldout: {str(data)!r} is not a packed folder with "
                            "manifest.json")
    scored, split = resolve_split(data)
    if mode == HELDOUT_AUTO and split != "heldout":
        raise AblationError(f"eval.heldout: the build {data} has no held-out rows "
                            "(heldout/); check build.eval_tokens")
    manifest = read_manifest(scored) or {}
    shards = [s.get("sha256") for s in manifest.get("shards") or [] if isinstance(s, dict)]
    info = {
        "mode": mode,
        "data": str(data),
        "scored": str(scored),
        "split": split,
        "digest": config_hash({"shards": shards, "seq_len": manifest.get("seq_len")}),
        "rows": manifest.get("num_sequences"),
        "seq_len": manifest.get("seq_len"),
    }
    held = manifest.get("heldout") if isinstance(manifest.get("heldout"), dict) else {}
    for key, name in (("doc_ids_sha256", "doc_ids_sha256"), ("documents", "documents"),
                      ("tokens", "tokens"), ("fraction", "eval_fraction"), ("seed", "eval_seed")):
        if key in held:  # the build's own record of the held-out documents
            info[name] = held[key]
    return info


def _write_report(out: Path) -> Path:
    from longctx.report.html import write_report

    path = out / "report.html"
    write_report([out], path, title=f"longctx ablation ({out.name})")
    return path


__all__ = ["AblationError", "Unit", "plan_units", "resolve_heldout", "run_ablation",
           "trained_length"]
