"""``longctx eval harness``: lm-evaluation-harness tasks (MMLU, HellaSwag, local ones) on a model.

Users compare long-context training by the harness they already trust: the paper's Table 3
puts a long-context score beside MMLU, before and after. lm-eval is an optional extra
(``pip install 'longctx[harness]'``); it is imported only here, inside the run.

The model is built the way needle and loss build it (:func:`~longctx.eval.generate.
load_eval_model`: the folder is checked first, safetensors only, no code from the folder,
``--rope-theta`` applied through :mod:`longctx.rope`), and lm-eval gets that instance
(``HFLM(pretrained=model)``), so it never loads weights or runs remote code itself.

Task names resolve against ``--include-path`` alone when its definitions cover every one of
them (lm-eval's own index spans ~15K task files and takes tens of seconds to build), else
against lm-eval's built-in tasks too. Datasets come from wherever ``datasets`` finds them:
a local ``dataset_path: json`` task needs nothing else; built-in tasks need a populated
Hugging Face cache when run with ``HF_DATASETS_OFFLINE=1``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longctx.cliopts import opt
from longctx.config import to_dict
from longctx.eval.generate import EvalError, load_eval_model
from longctx.eval.model_args import EvalModelArgs
from longctx.stage import (
    path_identity,
    run_hash,
    sha256_file,
    sha256_text,
    write_json_atomic,
    write_manifest,
)

STAGE = "eval.harness"
RUN_INPUTS = ("model", "include_path")  # path fields behind the run hash
MISSING = ("lm-evaluation-harness is not installed; install the optional extra: "
           "pip install 'longctx[harness]'")
LIMITED_NOTE = ("scores over the first {limit} documents of each task (--limit): not "
                "comparable with a full run or with published numbers")


@dataclass
class HarnessConfig(EvalModelArgs):
    """``longctx eval harness`` settings (defaults < YAML < flags < --set)."""

    tasks: list[str] = opt(factory=list, help="Comma-separated lm-eval task or group names "
                           "(e.g. mmlu,hellaswag, or tasks defined in --include-path).")
    include_path: str = opt("", "Folder of local lm-eval task definitions (YAML); its files "
                            "are part of the run's identity.")
    limit: int | None = opt(None, "Only the first N documents of each task (a quick check: "
                            "the scores are marked not comparable).")
    num_fewshot: int | None = opt(None, "Few-shot examples per prompt.", show="each task's own")
    batch_size: int = opt(1, "Requests per forward pass.")
    max_length: int | None = opt(None, "Longest input in tokens; longer ones are cut from the "
                                 "left.", show="the model's max_position_embeddings")
    bootstrap_iters: int = opt(100000, "Bootstrap resamples for the stderr of metrics without "
                               "a closed form (0: no stderr).")

    def validate(self) -> None:
        if not self.tasks:
            raise EvalError("tasks: give at least one lm-eval task (--tasks mmlu,hellaswag)")
        if self.include_path and not Path(self.include_path).is_dir():
            raise EvalError(f"include_path: {self.include_path} is not a folder")
        for name in ("limit", "batch_size", "max_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise EvalError(f"{name} must be at least 1, got {value}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise EvalError(f"num_fewshot must be >= 0, got {self.num_fewshot}")
        if self.bootstrap_iters < 0:
            raise EvalError(f"bootstrap_iters must be >= 0, got {self.bootstrap_iters}")


def harness_run_hash(cfg: HarnessConfig) -> str:
    return run_hash(cfg, RUN_INPUTS)


def import_lm_eval() -> Any:
    """The ``lm_eval`` package, or one line saying how to install it."""
    try:
        import lm_eval
        import lm_eval.models.huggingface  # noqa: F401 - HFLM, needs torch and transformers
        import lm_eval.tasks  # noqa: F401 - TaskManager
    except ImportError:
        raise EvalError(MISSING) from None
    return lm_eval


def task_manager(cfg: HarnessConfig) -> Any:
    """lm-eval's task index: ``include_path`` alone when it defines every requested name."""
    from lm_eval.tasks import TaskManager

    if cfg.include_path:
        local = TaskManager(include_path=cfg.include_path, include_defaults=False)
        if all(t in local.all_tasks for t in cfg.tasks):
            return local
    manager = TaskManager(include_path=cfg.include_path or None)
    unknown = [t for t in cfg.tasks if t not in manager.all_tasks]
    if unknown:
        where = f" or in {cfg.include_path}" if cfg.include_path else ""
        raise EvalError(f"tasks: lm-eval {lm_eval_version()} has no task {', '.join(unknown)}"
                        f"{where} (`lm-eval ls tasks` lists them)")
    return manager


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def run_harness(
    cfg: HarnessConfig, out_dir: str | Path, *, force: bool = False
) -> dict[str, Any]:
    """Check the model folder and lm-eval, claim ``out_dir``, evaluate, write harness.json."""
    from longctx.models import check_model_dir, resolve_model_dir
    from longctx.stage import claimed_stage

    t0 = time.perf_counter()
    check_model_dir(resolve_model_dir(cfg.model))  # refused here, before lm-eval sees it
    lm_eval = import_lm_eval()
    manager = task_manager(cfg)  # an unknown task is refused before --out is claimed
    with claimed_stage(out_dir, STAGE, harness_run_hash(cfg), force=force,
                       inputs=[cfg.include_path, cfg.model]):
        return _run_harness(lm_eval, manager, cfg, Path(out_dir), t0)


def _run_harness(
    lm_eval: Any, manager: Any, cfg: HarnessConfig, out: Path, t0: float
) -> dict[str, Any]:
    from lm_eval.models.huggingface import HFLM

    from longctx.data.tokenizer import load_tokenizer

    model, folder = load_eval_model(cfg.model, rope_theta=cfg.rope_theta,
                                    max_length=cfg.max_length or 0, dtype=cfg.dtype,
                                    device=cfg.device)
    tok = load_tokenizer(folder)
    lm = HFLM(pretrained=model, tokenizer=tok.hf, batch_size=cfg.batch_size,
              max_length=cfg.max_length, trust_remote_code=False)
    raw = lm_eval.simple_evaluate(
        model=lm, tasks=list(cfg.tasks), num_fewshot=cfg.num_fewshot, limit=cfg.limit,
        bootstrap_iters=cfg.bootstrap_iters, task_manager=manager, log_samples=False,
        confirm_run_unsafe_code=False,
    )
    seconds = time.perf_counter() - t0
    result = harness_result(cfg, raw, seconds)
    described = tok.describe()
    result["provenance"] |= {"model_dir": str(folder), "max_length": lm.max_length,
                             "tokenizer": {k: described[k] for k in ("name", "sha256")}}
    write_json_atomic(out / "harness.json", result)
    write_json_atomic(out / "lm_eval.json", raw)
    write_manifest(out, {
        "stage": STAGE,
        "status": "done",
        "config": to_dict(cfg),
        "config_hash": harness_run_hash(cfg),
        "model_identity": result["model_identity"],
        "lm_eval_version": result["lm_eval_version"],
        "limit": cfg.limit,
        "counts": {"tasks": sum(r["kind"] == "task" for r in result["results"].values()),
                   "groups": sum(r["kind"] == "group" for r in result["results"].values())},
        "checksums": {name: sha256_file(out / name) for name in ("harness.json", "lm_eval.json")},
        "seconds": time.perf_counter() - t0,
    })
    return result


def harness_result(cfg: HarnessConfig, raw: dict[str, Any], seconds: float) -> dict[str, Any]:
    """harness.json from lm-eval's result dict: per task and group, the metrics and stderrs as
    lm-eval reports them, plus what makes two runs comparable (version, configs, limit)."""
    configs = raw.get("configs") or {}
    subtasks = raw.get("group_subtasks") or {}
    n_shot = raw.get("n-shot") or {}
    samples = raw.get("n-samples") or {}
    better = raw.get("higher_is_better") or {}
    rows = {**(raw.get("results") or {}), **(raw.get("groups") or {})}
    results = {}
    for name, values in rows.items():
        results[name] = {
            "kind": "group" if subtasks.get(name) else "task",
            "alias": str(values.get("alias", name)).strip(" -"),
            "metrics": metrics_of(values, better.get(name) or {}),
            "num_fewshot": n_shot.get(name),
            "documents": samples.get(name) or _group_documents(values),
            "version": (raw.get("versions") or {}).get(name),
            **({"subtasks": list(subtasks[name])} if subtasks.get(name) else {}),
            **({"config_sha256": _json_sha256(configs[name])} if name in configs else {}),
        }
    settings = raw.get("config") or {}
    return {
        "stage": STAGE,
        "model": cfg.model,
        "model_identity": path_identity(cfg.model),  # a retrained model in the same folder
        "lm_eval_version": raw.get("lm_eval_version") or lm_eval_version(),
        "tasks": list(cfg.tasks),
        "limit": cfg.limit,
        "limited": cfg.limit is not None,
        "comparable": cfg.limit is None,
        **({"note": LIMITED_NOTE.format(limit=cfg.limit)} if cfg.limit is not None else {}),
        "results": results,
        "provenance": {
            "rope_theta": cfg.rope_theta,
            "dtype": cfg.dtype,
            "include_path": cfg.include_path or None,
            "task_config_sha256": {n: _json_sha256(c) for n, c in sorted(configs.items())},
            "data_files": local_data_files(configs),
            "bootstrap_iters": cfg.bootstrap_iters,
            "batch_size": cfg.batch_size,
            "seeds": {k: settings.get(k) for k in
                      ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")},
            "transformers_version": raw.get("transformers_version"),
        },
        "seconds": seconds,
    }


def summary(result: dict[str, Any]) -> str:
    """One line: the first metric of every requested task or group."""
    shown = []
    for name in result["tasks"]:
        metrics = (result["results"].get(name) or {}).get("metrics") or {}
        key, m = next(iter(metrics.items()), ("", {}))
        if m.get("value") is not None:
            shown.append(f"{name} {key.split(',')[0]} {m['value']:.3f}")
    limited = f" (--limit {result['limit']}: not comparable)" if result["limited"] else ""
    return (", ".join(shown) or "no metrics") + limited


def metrics_of(values: dict[str, Any], higher_is_better: dict[str, Any]) -> dict[str, Any]:
    """``{"acc,none": {"value", "stderr", "higher_is_better"}}`` from lm-eval's flat keys
    (``acc,none`` and ``acc_stderr,none``; a stderr lm-eval could not compute is None)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        metric, sep, filt = key.partition(",")
        if not sep or metric.endswith("_stderr"):
            continue
        stderr = values.get(f"{metric}_stderr,{filt}")
        out[key] = {"value": _number(value), "stderr": _number(stderr),
                    "higher_is_better": higher_is_better.get(metric)}
    return out


def local_data_files(configs: dict[str, Any]) -> dict[str, str]:
    """sha256 of every local file a task reads through ``dataset_kwargs.data_files``."""
    found: dict[str, str] = {}
    for c in configs.values():
        files = ((c or {}).get("dataset_kwargs") or {}).get("data_files")
        names = files.values() if isinstance(files, dict) else [files]
        for entry in names:
            for name in entry if isinstance(entry, list) else [entry]:
                if isinstance(name, str) and Path(name).is_file():
                    found[name] = sha256_file(name)
    return dict(sorted(found.items()))


def _group_documents(values: dict[str, Any]) -> dict[str, int] | None:
    """A group's documents: lm-eval counts them over its subtasks as ``sample_len``."""
    n = values.get("sample_len")
    return {"effective": n} if isinstance(n, int) else None


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _json_sha256(obj: Any) -> str:
    return sha256_text(json.dumps(obj, sort_keys=True, default=str))
