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
kill is dropped, so an interrupted grid resumes where it stopped. QA tasks whose dataset
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
from longctx.eval.generate import EvalError, PromptCache, greedy_generate, load_eval_model
from longctx.eval.haystack import Haystack, load_haystack
from longctx.eval.model_args import EvalModelArgs
from longctx.eval.ruler import constants
from longctx.eval.ruler.qa import RulerDataMissing, load_qa, require_dataset
from longctx.eval.ruler.score import average_over_tasks, sample_scores, score_task
from longctx.eval.ruler.tasks import DEFAULT_SEED, TASKS, TaskSpec, make_sample
from longctx.stage import (
    claimed_stage,
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
def read_done(path: Path, hashes: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Finished cells whose hash matches; a trailing line cut by a kill is cut off the file
    so that the next append starts on a line of its own."""
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(raw.rfind(b"\n") + 1)
    for line in raw.decode("utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("cell_hash") and (
            hashes.get(rec.get("task")) == rec["cell_hash"]
        ):
            done[cell_key(rec["task"], rec["length"], rec["index"])] = rec
    return done


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
    """Claim ``out_dir`` (lock, foreign-folder and input-overlap checks), then run."""
    with claimed_stage(out_dir, STAGE, ruler_run_hash(cfg), force=force,
                       inputs=[cfg.haystack, cfg.model, cfg.squad, cfg.hotpotqa]):
        return _run_ruler(cfg, Path(out_dir), progress=progress, say=say)


def _run_ruler(
    cfg: RulerConfig, out: Path, *, progress: bool | None, say: Callable[[str], None]
) -> dict:
    """Evaluate the grid, write ``ruler.json``, ``ruler.png``, ``manifest.json``; return the
    ruler.json content. Finished cells in ``cells.jsonl`` are reused."""
    from longctx.data.tokenizer import load_tokenizer
    from longctx.models import resolve_model_dir
    from longctx.plotting import ruler_figure, save_png
    from longctx.progress import progress_bar

    t0 = time.perf_counter()
    tasks, skipped = split_runnable(cfg)
    for s in skipped:
        say(f"eval ruler: {s['reason']}")
    hay = load_haystack(cfg.haystack or None)
    hashes = cell_hashes(cfg, hay, tasks)
    cells_path = out / "cells.jsonl"
    done = read_done(cells_path, hashes)
    grid = [(t, n, i) for t in tasks for n in cfg.lengths for i in range(cfg.samples)]
    todo = [c for c in grid if cell_key(*c) not in done]

    folder = resolve_model_dir(cfg.model)
    tok = load_tokenizer(folder)
    for task in dict.fromkeys(t for t, _, _ in todo):  # a too-short length fails before loading
        make_sample(task, min(cfg.lengths), tok, hay, seed=cfg.seed,
                    squad=cfg.squad or None, hotpotqa=cfg.hotpotqa or None)
    model = None
    if todo:
        model, _ = load_eval_model(cfg.model, rope_theta=cfg.rope_theta,
                                   max_length=max(cfg.lengths), dtype=cfg.dtype,
                                   device=cfg.device)

    prompts = PromptCache()
    with progress_bar(progress, transient=True) as bar, open(cells_path, "a") as sink:
        job = bar.add_task("ruler", total=len(todo))
        for task, length, index in todo:
            rec = _run_cell(cfg, model, tok, hay, task, length, index, prompts)
            rec["cell_hash"] = hashes[task]
            sink.write(json.dumps(rec) + "\n")
            sink.flush()
            done[cell_key(task, length, index)] = rec
            bar.advance(job)

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
        "prefill": {"prompt_tokens": prompts.reused_tokens + prompts.prefilled_tokens,
                    "tokens_from_cache": prompts.reused_tokens},
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
