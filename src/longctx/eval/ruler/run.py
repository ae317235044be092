"""``longctx eval ruler``: RULER's tasks over a task x length x sample grid, one model load.

Each cell (task, length, sample index) is one prompt from :func:`~longctx.eval.ruler.tasks.
make_sample` in the model's own tokens (exactly ``length - tokens_to_generate`` of them),
greedily continued for the task's ``tokens_to_generate`` (stopping at EOS only, as RULER's
generation does) and scored with the task's RULER metric (0..1 per sample). Per task and
length the score is RULER's: the mean x100 over samples, 2 decimals; per length the mean over
the tasks that ran (RULER's headline number). Consecutive prompts share their template
and, for the noise and needle haystacks, everything before the first needle, so one
:class:`~longctx.eval.generate.PromptCache` prefills each shared prefix once.

Finished cells are appended to ``cells.jsonl``, one whole line each, and skipped on rerun
when their ``cell_hash`` (everything a cell's result depends on) matches; a line cut by a
kill is dropped, so an interrupted grid resumes where it stopped. Under torchrun each rank
runs a contiguous block of the grid into its own partial file and rank 0 writes the outputs
(:mod:`longctx.eval.distributed`). QA tasks whose dataset
file was not given are skipped with one message line each and listed in ``ruler.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longctx.cliopts import opt
from longctx.config import to_dict
from longctx.eval import scorers
from longctx.eval.distributed import PartialLog, Ranks, claimed_by_main, merged_result
from longctx.eval.distributed import current as current_ranks
from longctx.eval.generate import EvalError, PromptCache, greedy_generate, load_eval_model
from longctx.eval.haystack import Haystack, load_haystack
from longctx.eval.model_args import EvalModelArgs
from longctx.eval.ruler import constants
from longctx.eval.ruler.qa import RulerDataMissing, load_qa, require_dataset
from longctx.eval.ruler.score import average_over_tasks, sample_scores, score_task
from longctx.eval.ruler.tasks import DEFAULT_SEED, TASKS, TaskSpec, make_sample
from longctx.stage import (
    config_hash,
    path_identity,
    run_hash,
    sha256_file,
    sha256_text,
    write_json_atomic,
    write_manifest,
)

STAGE = "eval.ruler"
RUN_INPUTS = ("model", "haystack", "squad", "hotpotqa")  # path fields behind the run hash
# The prompt constants a result depends on (templates, needle and noise sentences, depths).
TEMPLATES_SHA256 = sha256_text(json.dumps(
    {k: v for k, v in sorted(vars(constants).items()) if k.isupper()}, default=list))
SEED_RULE = "random.Random('ruler|{task}|{length}|{seed}|{index}') per sample"


@dataclass
class RulerConfig(EvalModelArgs):
    """``longctx eval ruler`` settings (defaults < YAML < flags < --set)."""

    lengths: list[int] = opt(factory=lambda: [4096, 8192],
                             help="Comma-separated total lengths in tokens (prompt + the task's "
                             "generation budget).")
    tasks: list[str] = opt(factory=lambda: ["all"],
                           help="all, or comma-separated RULER task names (niah_single_1, ..., "
                           "vt, cwe, fwe, qa_1, qa_2).")
    samples: int = opt(20, "Samples per task and length (RULER's num_samples).")
    haystack: str = opt("", "Essay haystack of the essay NIAH tasks and cwe's word source: "
                        "a folder of .txt files, a .txt file or RULER's PaulGrahamEssays.json; "
                        "default: the Python reference manual shipped with Python (offline).")
    squad: str = opt("", "SQuAD v2.0 dev JSON for qa_1 (skipped without it).")
    hotpotqa: str = opt("", "HotpotQA dev distractor JSON for qa_2 (skipped without it).")
    seed: int = opt(DEFAULT_SEED, "Seed of every sample's keys, values, depths and shuffles.")
    prefill_chunk: int = opt(0, "Prompt tokens per forward pass (0 = the whole prompt at once).")
    trained_length: int | None = opt(None, "Draw the dashed trained-length line at this length.")

    def validate(self) -> None:
        if not self.tasks:
            raise EvalError("tasks: give 'all' or RULER task names")
        unknown = [t for t in self.tasks if t != "all" and t not in TASKS]
        if unknown:
            raise EvalError(f"tasks: unknown RULER task {unknown[0]!r}; known: all, "
                            + ", ".join(TASKS))
        if not self.lengths or any(x <= 0 for x in self.lengths):
            raise EvalError(f"lengths: need positive token counts, got {self.lengths}")
        if len(set(self.lengths)) != len(self.lengths):
            raise EvalError(f"lengths: each length once, got {self.lengths}")
        budget = max(TASKS[t].tokens_to_generate for t in self.task_names)
        if min(self.lengths) <= budget:
            raise EvalError(f"lengths: {min(self.lengths)} leaves no prompt room after the "
                            f"{budget} tokens the tasks generate")
        if self.samples < 1:
            raise EvalError(f"samples must be >= 1, got {self.samples}")

    @property
    def task_names(self) -> list[str]:
        """The tasks to run, in RULER's order ('all' expands to the 13)."""
        wanted = set(TASKS) if "all" in self.tasks else set(self.tasks)
        return [t for t in TASKS if t in wanted]


def ruler_run_hash(cfg: RulerConfig) -> str:
    return run_hash(cfg, RUN_INPUTS)


def cell_key(task: str, length: int, index: int) -> str:
    return f"{task}:{length}:{index}"


# ---------------------------------------------------------------------------- inputs
def dataset_path(cfg: RulerConfig, spec: TaskSpec) -> str:
    return cfg.squad if spec.dataset == "squad" else cfg.hotpotqa


def split_runnable(cfg: RulerConfig) -> tuple[list[str], list[dict[str, str]]]:
    """(tasks that can run, skipped QA tasks with their message): a QA task runs only when its
    file is there, and needs a question per sample."""
    runnable, skipped = [], []
    for name in cfg.task_names:
        spec = TASKS[name]
        if spec.family == "qa":
            try:
                path = require_dataset(name, spec.dataset, dataset_path(cfg, spec))
            except RulerDataMissing as e:
                skipped.append({"task": name, "reason": str(e)})
                continue
            have = len(load_qa(spec.dataset, path).questions)
            if have < cfg.samples:
                raise EvalError(f"{name}: {path} has {have} questions, fewer than --samples "
                                f"{cfg.samples}")
        runnable.append(name)
    return runnable, skipped


def task_inputs(cfg: RulerConfig, spec: TaskSpec, hay: Haystack) -> dict[str, Any]:
    """The files a task's prompts are built from: the essay for essay NIAH and cwe, the
    dataset for QA, nothing for the self-generated ones."""
    if spec.family == "qa":
        return {"dataset_sha256": sha256_file(dataset_path(cfg, spec))}
    if spec.family == "cwe" or (spec.niah is not None and spec.niah.haystack == "essay"):
        return {"haystack_sha256": hay.sha256}
    return {}


def cell_hashes(cfg: RulerConfig, hay: Haystack, tasks: Sequence[str]) -> dict[str, str]:
    """Per task, the hash of everything its cells' results depend on."""
    common = {
        "model": cfg.model,
        "model_identity": path_identity(cfg.model),
        "rope_theta": cfg.rope_theta,
        "dtype": cfg.dtype,
        "seed": cfg.seed,
        "templates_sha256": TEMPLATES_SHA256,
        "scorer": scorers.SCORER_VERSION,
    }
    return {
        t: config_hash(common | {"task": t, "inputs": task_inputs(cfg, TASKS[t], hay)})
        for t in tasks
    }


# ------------------------------------------------------------------------ cells file
def read_done(log: PartialLog, hashes: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Finished cells (of ``cells.jsonl`` and the ranks' partial files) whose hash matches."""
    return {
        cell_key(r["task"], r["length"], r["index"]): r for r in log.records()
        if r.get("cell_hash") and hashes.get(r.get("task")) == r["cell_hash"]
    }


# --------------------------------------------------------------------------- scoring
def aggregate(
    cells: Sequence[Mapping[str, Any]], tasks: Sequence[str], lengths: Sequence[int]
) -> dict[str, Any]:
    """RULER's numbers from per-sample cells: per task x length the score 0..100 (mean of the
    samples' metric x100, 2 decimals), per length the mean over tasks, and their mean."""
    by: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for c in cells:
        by.setdefault((c["task"], c["length"]), []).append(c)
    task_scores = {
        t: {str(n): score_task(t, [c["response"] for c in by[t, n]],
                               [c["answers"] for c in by[t, n]]) for n in lengths}
        for t in tasks
    }
    length_averages = {
        str(n): average_over_tasks({t: task_scores[t][str(n)] for t in tasks}) for n in lengths
    } if tasks else {}
    average = (round(sum(length_averages.values()) / len(length_averages), 2)
               if length_averages else None)
    return {"task_scores": task_scores, "length_averages": length_averages, "average": average}


# ---------------------------------------------------------------------------- running
def run_ruler(
    cfg: RulerConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    force: bool = False,
    say: Callable[[str], None] = print,
) -> dict:
    """Claim ``out_dir`` (lock, foreign-folder and input-overlap checks), then run; under
    torchrun the cells are shared over the ranks (:mod:`longctx.eval.distributed`)."""
    ranks = current_ranks()
    with claimed_by_main(ranks, out_dir, STAGE, ruler_run_hash(cfg), force=force,
                         inputs=[cfg.haystack, cfg.model, cfg.squad, cfg.hotpotqa]):
        return _run_ruler(cfg, Path(out_dir), ranks, progress=progress,
                          say=say if ranks.is_main else lambda _: None)


def _run_ruler(
    cfg: RulerConfig, out: Path, ranks: Ranks, *, progress: bool | None,
    say: Callable[[str], None],
) -> dict:
    """Evaluate this rank's contiguous block of the grid; rank 0 then writes ``ruler.json``,
    ``ruler.png``, ``manifest.json`` and every rank returns the ruler.json content. Finished
    cells in ``cells.jsonl`` (and the ranks' partial files) are reused."""
    from longctx.data.tokenizer import load_tokenizer
    from longctx.models import resolve_model_dir
    from longctx.progress import progress_bar

    t0 = time.perf_counter()
    tasks, skipped = split_runnable(cfg)
    for s in skipped:
        say(f"eval ruler: {s['reason']}")
    hay = load_haystack(cfg.haystack or None)
    hashes = cell_hashes(cfg, hay, tasks)
    log = PartialLog(out, "cells", ranks)
    done = read_done(log, hashes)
    ranks.barrier()  # every rank has read the finished cells before any rank appends
    grid = [(t, n, i) for t in tasks for n in cfg.lengths for i in range(cfg.samples)]
    todo = [c for c in grid if cell_key(*c) not in done]
    mine = ranks.share(todo, weights=[n for _, n, _ in todo])

    folder = resolve_model_dir(cfg.model)
    tok = load_tokenizer(folder)
    for task in dict.fromkeys(t for t, _, _ in todo):  # a too-short length fails before loading
        make_sample(task, min(cfg.lengths), tok, hay, seed=cfg.seed,
                    squad=cfg.squad or None, hotpotqa=cfg.hotpotqa or None)
    model = None
    if mine:
        model, _ = load_eval_model(cfg.model, rope_theta=cfg.rope_theta,
                                   max_length=max(cfg.lengths), dtype=cfg.dtype,
                                   device=ranks.device(cfg.device))

    prompts = PromptCache()
    with progress_bar(progress if ranks.is_main else False, transient=True) as bar, \
            log.sink() as write:
        job = bar.add_task("ruler", total=len(mine))
        for task, length, index in mine:
            rec = _run_cell(cfg, model, tok, hay, task, length, index, prompts)
            rec["cell_hash"] = hashes[task]
            write(rec)
            bar.advance(job)
    prefill = {"prompt_tokens": ranks.total(prompts.reused_tokens + prompts.prefilled_tokens),
               "tokens_from_cache": ranks.total(prompts.reused_tokens)}

    def write_outputs() -> dict:
        return _write_ruler(cfg, out, ranks, t0, read_done(log, hashes), grid, todo, tasks,
                            skipped, hay, tok, folder, hashes, prefill)

    return merged_result(ranks, log, write_outputs, out / "ruler.json")


def _write_ruler(
    cfg: RulerConfig, out: Path, ranks: Ranks, t0: float, done: Mapping[str, dict[str, Any]],
    grid: list[tuple[str, int, int]], todo: list[tuple[str, int, int]], tasks: list[str],
    skipped: list[dict[str, str]], hay: Haystack, tok: Any, folder: Path,
    hashes: dict[str, str], prefill: dict[str, int],
) -> dict:
    """ruler.json, ruler.png and manifest.json from the finished cells (rank 0)."""
    from longctx.plotting import ruler_figure, save_png

    cells = [{k: v for k, v in done[cell_key(*c)].items() if k != "cell_hash"} for c in grid]
    scores = aggregate(cells, tasks, cfg.lengths)
    result = {
        "stage": STAGE,
        "model": cfg.model,
        "model_identity": path_identity(cfg.model),
        "tasks": tasks,
        "lengths": list(cfg.lengths),
        "samples": cfg.samples,
        "score_scale": "RULER's: task score = 100 x mean sample score (2 decimals); cell "
                       "score in 0..1",
        **scores,
        "skipped": skipped,
        "trained_length": cfg.trained_length,
        "cells": cells,
        "provenance": _provenance(cfg, hay, tok, folder, tasks),
    }
    write_json_atomic(out / "ruler.json", result)
    save_png(ruler_figure(result), out / "ruler.png")
    write_manifest(out, {
        "stage": STAGE,
        "status": "done",
        "config": to_dict(cfg),
        "config_hash": ruler_run_hash(cfg),
        "cell_hashes": hashes,
        "counts": {"cells": len(grid), "computed_now": len(todo),
                   "reused": len(grid) - len(todo), "skipped_tasks": len(skipped)},
        "prefill": prefill,
        "world_size": ranks.world,
        "average": scores["average"],
        "checksums": {"ruler.json": sha256_file(out / "ruler.json"),
                      "ruler.png": sha256_file(out / "ruler.png")},
        "seconds": time.perf_counter() - t0,
    })
    return result


def _provenance(
    cfg: RulerConfig, hay: Haystack, tok: Any, folder: Path, tasks: Sequence[str]
) -> dict[str, Any]:
    datasets = {
        TASKS[t].dataset: {"path": dataset_path(cfg, TASKS[t]),
                           "sha256": sha256_file(dataset_path(cfg, TASKS[t]))}
        for t in tasks if TASKS[t].family == "qa"
    }
    return {
        "haystack": hay.describe(),
        "datasets": datasets,
        "model_template": constants.BASE_TEMPLATE,
        "templates_sha256": TEMPLATES_SHA256,
        "seed": cfg.seed,
        "seed_rule": SEED_RULE,
        "scorer_version": scorers.SCORER_VERSION,
        "scorer_version_sha256": sha256_text(scorers.SCORER_VERSION),
        "metrics": {t: TASKS[t].metric for t in tasks},
        "tokenizer": tok.describe(),
        "model_dir": str(folder),
        "rope_theta": cfg.rope_theta,
        "decoding": {"greedy": True, "stop": "eos",
                     "tokens_to_generate": {t: TASKS[t].tokens_to_generate for t in tasks}},
    }


def _run_cell(
    cfg: RulerConfig,
    model: Any,
    tok: Any,
    hay: Haystack,
    task: str,
    length: int,
    index: int,
    prompts: PromptCache,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    spec = TASKS[task]
    sample = make_sample(task, length, tok, hay, seed=cfg.seed, index=index,
                         squad=cfg.squad or None, hotpotqa=cfg.hotpotqa or None)
    new = greedy_generate(model, sample.ids, max_new_tokens=spec.tokens_to_generate,
                          stop_ids=[i for i in (tok.eos_id,) if i is not None],
                          prefill_chunk=cfg.prefill_chunk, prompt_cache=prompts)
    response = tok.decode(new, skip_special_tokens=True)
    return {
        "task": task,
        "length": length,
        "index": index,
        "score": sample_scores(task, [response], [sample.answers])[0],
        "response": response,
        "answers": list(sample.answers),
        "input_tokens": sample.input_tokens,
        "new_tokens": len(new),
        "prompt_sha256": sha256_text(sample.prompt),
        "seconds": time.perf_counter() - t0,
    }
