"""``longctx ablate --print-commands``: the ablation as stage commands, for a cluster.

``longctx ablate`` runs every stage in its own process, one after the other; the paper's
ablation (LLaMA-2-7B at 80K, days per arm on 8 GPUs) needs each training as a multi-GPU job
instead. This writes every stage's full config as YAML next to its output folder and prints
one command per stage (builds, then ``torchrun`` trainings, then evaluations). Each command
builds exactly the config ``longctx ablate`` would, so once the jobs have run, ``longctx
ablate`` with the same config finds every stage done and only writes ablation.json and the
report.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

import yaml

from longctx.ablate.config import AblationConfig
from longctx.ablate.run import STAGE, Unit, plan_units, trained_length
from longctx.stage import stage_output, write_manifest


def _write(path: Path, cfg: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return path


def _q(*parts: Any) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts)


def heldout_data(cfg: AblationConfig, first: Unit) -> Path:
    """What ``eval loss`` is given, known before any build ran (see ``resolve_heldout``)."""
    mode = cfg.eval.heldout
    return first.folder("data") if mode in ("auto", "train_rows") else Path(mode)


def stage_commands(cfg: AblationConfig, *, nproc: int = 8) -> list[str]:
    """Write ``<unit>/{build,train,loss,needle}.yaml`` and return the shell lines, in order."""
    out = Path(cfg.out)
    units = plan_units(cfg)
    held = heldout_data(cfg, units[0])
    builds, trains, evals = [], [], []
    with stage_output(out, STAGE, inputs=cfg.corpus.inputs):
        write_manifest(out, {"stage": STAGE, "status": "planned", "config": cfg.record()})
        for u in units:
            bc = cfg.build_config(u.arm, u.seed, u.folder("data"))
            builds.append(_q("longctx", "data", "build", "--config",
                             _write(u.root / "build.yaml", bc)))
            tc = cfg.train_config(u.arm, u.seed, u.folder("data"), u.folder("train"))
            launch = (["torchrun", "--nproc-per-node", nproc, "-m", "longctx.train"]
                      if nproc > 1 else ["longctx", "train"])
            trains.append(_q(*launch, "--config", _write(u.root / "train.yaml", tc)))
            model = u.folder("train") / "final"
            if cfg.eval.loss is not None:
                lc = cfg.loss_config(model, held)
                evals.append(_q("longctx", "eval", "loss", "--config",
                                _write(u.root / "loss.yaml", lc), "--data", lc.data,
                                "--out", u.folder("loss")))
            if cfg.eval.needle is not None:
                nc = cfg.needle_config(model, trained_length(tc, bc))
                evals.append(_q("longctx", "eval", "needle", "--config",
                                _write(u.root / "needle.yaml", nc), "--out", u.folder("needle")))
    return ["# 1. data builds (CPU jobs)", *builds,
            "# 2. training (GPU jobs, after the builds)", *trains,
            "# 3. evaluations (after each training)", *evals,
            "# 4. collect: every stage above is reused; writes ablation.json and report.html",
            _q("longctx", "ablate", "--out", out) + " --config <this config>"]
