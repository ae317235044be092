"""Passes 1 and 2 of ``data build``, as orchestration (the per-file steps are
:mod:`longctx.pack.index` and :mod:`longctx.pack.scan`).

Pass 1 indexes files in the seeded order until every budget group's candidates hold
``margin`` x its budget in estimated eligible tokens (or the files run out); pass 2
tokenizes, in rounds, the candidates inside each group's priority cut-off
(:mod:`longctx.mix.cutoff`) until the real eligible tokens inside meet the budget, indexing
more files when a group runs dry. Tasks run on the local worker pool or an executor
(:func:`_run`); results are consumed in task order, so nothing depends on worker count or
timing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longctx.config import parse_count
from longctx.data.workers import run_ordered
from longctx.mix.cutoff import EXHAUSTED, TOKENIZE, decide, estimated_eligible, inside
from longctx.mix.input_stats import NOT_ASKED, InputStats, split_by_code
from longctx.mix.strategies import (
    GLOBAL_GROUP,
    MixError,
    is_long,
    plan_budgets,
)
from longctx.pack.buildplan import BuildError, ScanPlan, fail_hook
from longctx.pack.executors import run_tasks
from longctx.pack.index import IndexTask, index_file, load_index_done
from longctx.pack.parts import (
    FileIndex,
    count_part,
    count_tasks,
    file_ranges,
    load_count_done,
    may_split,
    merge_parts,
    part_tasks,
)
from longctx.pack.scan import (
    PART_BITS,
    ScanTask,
    init_worker,
    load_done,
    scan_file,
    spill_key,
)
from longctx.pack.spill import Pool

# The per-task steps the passes run: the build's fork server imports their modules once.
STEPS = (count_part, index_file, scan_file)
# A round with less text than this to tokenize runs in this process: 1 MiB is about half a
# CPU-second of tokenizing here, what starting two workers costs (an executor's jobs cost
# far more wall time). Where a round runs changes nothing it writes.
SMALL_ROUND_BYTES = 1 << 20


@dataclass
class ScanResult:
    """What the two passes left for selection (token spills are in ``plan.work``)."""

    summaries: list[dict[str, Any]]  # per file indexed, in reading order: its index marker
    stats: InputStats  # per-domain input statistics of the files indexed
    pool: Pool  # their candidates and held-out documents, and what the rounds tokenized
    scans: list[dict[str, Any]] = field(default_factory=list)  # every round's file scans
    parts: dict[int, FileIndex] = field(default_factory=dict)  # file -> its ranges' rows
    last_new_domain: int = 0  # files indexed when the latest new domain first appeared
    results: int = 0  # task results consumed (index and rounds): the fail hook counts them


def scan_inputs(plan: ScanPlan, bar: Any) -> ScanResult:
    """Index files in the seeded order until every budget is covered (or the files run out),
    then tokenize in rounds what selection can reach (see the module docstring).

    The work folder must be open (:func:`open_work_dir`); ``bar`` is a progress bar."""
    scan = ScanResult([], InputStats(plan.spec.specials_per_doc, plan.cfg.long_threshold),
                      Pool())
    index_files(plan, scan, bar, lambda: _covered(plan, scan))
    tokenize_rounds(plan, scan, bar)
    return scan


def _budgets(plan: ScanPlan, stats: InputStats) -> dict[str, int] | None:
    """The budgets the input seen so far gives, or None while they cannot be planned."""
    cfg = plan.cfg
    if cfg.mix and any(d not in stats.domains for d in cfg.mix):
        return None
    try:
        return plan_budgets(plan.strategy, plan.total, stats.token_weights(), cfg.mix,
                            cfg.upsample)[1]
    except MixError:
        return None


def _covered(plan: ScanPlan, scan: ScanResult) -> bool:
    """After each file indexed: stop? Once every budget group's candidates hold ``margin`` x
    its budget in estimated eligible tokens; never before ``min_files`` files and before the
    domain set has settled (no new domain in the second half of the files indexed: a corpus
    whose files are not mixed, e.g. one domain per file, is indexed until every domain has
    shown up)."""
    cfg, n = plan.cfg, len(scan.summaries)
    if not cfg.subset or n < min(cfg.min_files, len(plan.tasks)) or n < 2 * scan.last_new_domain:
        return False
    budgets = _budgets(plan, scan.stats)
    return budgets is not None and all(
        scan.stats.eligible(k) >= cfg.margin * b for k, b in budgets.items() if b)


def index_files(plan: ScanPlan, scan: ScanResult, bar: Any, stop: Any) -> None:
    """Pass 1 (:mod:`longctx.pack.index`) over the files not indexed yet, in the seeded
    order, until ``stop()`` says enough (asked after each file) or the files run out."""
    start = len(scan.summaries)
    tasks = plan.tasks[start:]
    if not tasks:
        return
    index_bar = bar.add_task("index files", total=len(tasks))
    parts: dict[int, int] = {}  # ranges per file
    pending: list[dict[str, Any]] = []  # the range summaries of the file at hand

    def on_result(summary: dict[str, Any]) -> bool:
        pending.append(summary)
        _result_done(scan)
        if len(pending) < parts[summary["index"]]:
            return False
        merged = merge_parts(plan.work, pending)
        pending.clear()
        _add_file(scan, merged)
        bar.advance(index_bar)
        return stop()

    for batch in _file_batches(plan, tasks):
        units = _index_units(plan, batch)
        parts.update((t.index, t.part + 1) for t in units)
        if _run(plan, f"index-{batch[0].index:07d}", index_file, units,
                load_index_done, on_result):
            break
    done = len(scan.summaries) - start
    bar.update(index_bar, total=done, completed=done)


def _add_file(scan: ScanResult, merged: FileIndex) -> None:
    summary, arrays = merged.summary, merged.arrays
    if set(summary["stats"]) - set(scan.stats.domains):
        scan.last_new_domain = len(scan.summaries) + 1
    scan.summaries.append(summary)
    scan.parts[summary["index"]] = merged
    scan.pool.add_file(summary["index"], summary["domains"], arrays)
    scan.stats.add(summary, arrays["domain"], arrays["nbytes"], arrays["kept"])


def _file_batches(plan: ScanPlan, tasks: list[IndexTask]) -> Any:
    """The files to index in batches of doubling size (a subset build reads a few of them:
    the lines of a big file's ranges are counted, and an executor indexes whole batches,
    only as far as the batches reach). One batch while every file is read anyway, or when
    the pool streams files that need no counting."""
    cfg = plan.cfg
    if not cfg.subset or (cfg.executor == "pool"
                          and not any(may_split(t.path, cfg.split_bytes) for t in tasks)):
        yield tasks
        return
    size = max(cfg.min_files, cfg.workers if cfg.executor == "pool" else cfg.executor_tasks, 1)
    pos = 0
    while pos < len(tasks):
        yield tasks[pos : pos + size]
        pos += size
        size *= 2


def _index_units(plan: ScanPlan, batch: list[IndexTask]) -> list[IndexTask]:
    """The index tasks of a batch of files: one per range, the ranges' lines counted first."""
    ranges = {t.index: file_ranges(t, plan.cfg.split_bytes) for t in batch}
    most = max(len(r) for r in ranges.values())
    if most > 1 << PART_BITS:
        raise BuildError(f"--split-bytes {plan.cfg.split_bytes} cuts a file into {most:,} "
                         f"ranges, more than the {1 << PART_BITS:,} a file may have")
    counting = [c for t in batch for c in count_tasks(t, ranges[t.index])]
    lines: dict[tuple[int, int], int] = {}

    def on_count(summary: dict[str, Any]) -> bool:
        lines[summary["index"], summary["part"]] = summary["lines"]
        return False

    if counting:
        _run(plan, f"count-{batch[0].index:07d}", count_part, counting, load_count_done,
             on_count)
    return [u for t in batch for u in part_tasks(
        t, ranges[t.index], [lines[t.index, k] for k in range(len(ranges[t.index]) - 1)])]


def _threads_per_worker(workers: int) -> int:
    """This machine's CPUs shared among the workers (no oversubscription on a big node)."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


def _run(plan: ScanPlan, name: str, step: Any, tasks: list[Any], done: Any,
         on_result: Any, here: bool = False) -> bool:
    """Run ``step`` over ``tasks`` and feed the results, in order, to ``on_result`` until it
    says stop (returns True); True if it did. The pool runs them ``--workers`` at a time and
    stops early; an executor runs them all, then the results are read from the markers.
    ``here``: in this process, one after the other (work too small to start workers for)."""
    cfg = plan.cfg
    if cfg.executor == "pool" or here:
        stopped = False

        def consume(result: Any) -> bool:
            nonlocal stopped
            stopped = bool(on_result(result))
            return stopped

        workers = 1 if here else cfg.workers
        run_ordered(step, len(tasks), lambda k: tasks[k], workers, consume, done=done,
                    initializer=init_worker, initargs=(_threads_per_worker(cfg.workers),),
                    tokenizer_json=Path(plan.spec.folder) / "tokenizer.json", keep_server=True)
        return stopped
    label = _labeller(plan)
    run_tasks(cfg.executor_settings(plan.work), name, step, tasks, done, label)
    for task in tasks:
        result = done(task)
        if result is None:  # a marker removed after its task finished
            raise BuildError(f"{name}: {label(task)} has no finished marker in {plan.work}")
        if on_result(result):
            return True
    return False


def _labeller(plan: ScanPlan) -> Any:
    """A task's name in errors: its file, and its range when the file is split."""
    paths = {t.index: t.path for t in plan.tasks}

    def label(task: Any) -> str:
        where = paths[task.index]
        if isinstance(task, ScanTask):
            where += f" (round {task.round + 1})"
        part = getattr(task, "part", 0)
        if part or getattr(task, "end", None) is not None:
            return f"{where} range {part} from {getattr(task, 'start', '?')}"
        return where

    return label


def _result_done(scan: ScanResult) -> None:
    scan.results += 1
    fail_hook("scan", scan.results)


def _groups(plan: ScanPlan, pool: Pool, keys: list[str]) -> dict[str, np.ndarray]:
    """Candidate positions of each budget group, in selection's order (priority, file, row)."""
    c = pool.cand
    order = np.lexsort((c["row"], c["file"], c["priority"]))
    if not plan.strategy.per_domain:
        return {GLOBAL_GROUP: order}
    by_code = split_by_code(c["domain"][order], len(pool.names))
    code = {d: i for i, d in enumerate(pool.names)}
    return {k: order[by_code[code[k]]] if k in code else order[:0] for k in keys}


def tokenize_rounds(plan: ScanPlan, scan: ScanResult, bar: Any) -> None:
    """Pass 2 in rounds (:mod:`longctx.mix.cutoff` decides, :mod:`longctx.pack.scan`
    tokenizes): until every budget group's cut-off holds its budget in real eligible tokens
    (or all its candidates are tokenized), and the held-out set's likewise. A group that runs
    dry while files are left makes pass 1 index more of them."""
    cfg, pool, stats = plan.cfg, scan.pool, scan.stats
    cuts: dict[str, tuple[int | None, int]] = {}
    held_cuts: dict[str, tuple[int | None, int]] = {}
    while True:
        budgets = _budgets(plan, stats)
        if budgets is None:
            return  # selection reports why
        est, known, real = _eligible_tokens(plan, scan)
        priority = pool.cand["priority"]
        want = np.zeros(len(known), bool)
        exhausted = []
        for key, g in _groups(plan, pool, sorted(budgets)).items():
            cut, ext = cuts.get(key, (None, 0))
            d = decide(priority[g], est[g], known[g], real[g], budgets[key], cut, ext)
            cuts[key] = (d.cutoff, d.extensions)
            if d.status == TOKENIZE:
                inner = g[: inside(priority[g], d.cutoff)]
                want[inner[~known[inner]]] = True
            elif d.status == EXHAUSTED:
                exhausted.append(key)
        held_want = _held_wants(plan, scan, held_cuts)
        if want.any() or held_want.any():
            _round(plan, scan, want, held_want, bar)
            continue
        if exhausted and cfg.subset and len(scan.summaries) < len(plan.tasks):
            dry = list(exhausted)
            index_files(plan, scan, bar, lambda dry=dry: _refilled(plan, scan, dry))
            for key in exhausted:
                cuts[key] = (None, cuts[key][1])
            continue
        break


def needed_tokens(plan: ScanPlan, scan: ScanResult, budgets: dict[str, int]) -> dict[str, int]:
    """Per domain, the tokens exact selection could not have done without: in each budget
    group's priority order (selection's), every candidate up to the one whose eligible tokens
    meet the group's budget (all of a group that falls short), but those its token bound
    proved short (they needed no tokens). What pass 2 tokenized beyond
    that is the price of finding the cut-off from estimates: the two together say how close
    to this floor a build came."""
    c = scan.pool.cand
    _, known, real = _eligible_tokens(plan, scan)
    needed = np.zeros(len(known), bool)
    for key, g in _groups(plan, scan.pool, sorted(budgets)).items():
        if budgets[key] <= 0:
            continue
        k = int(np.searchsorted(np.cumsum(real[g]), budgets[key], side="left")) + 1
        needed[g[:k]] = True
    needed &= c["length"] >= 0
    n = np.bincount(c["domain"][needed], weights=c["length"][needed],
                    minlength=len(scan.pool.names))
    return {d: int(n[i]) for i, d in enumerate(scan.pool.names)}


def _refilled(plan: ScanPlan, scan: ScanResult, groups: list[str]) -> bool:
    """Stop indexing more files for groups that ran dry? Once their real eligible tokens
    plus the estimate of the candidates not tokenized yet hold ``margin`` x their budget."""
    budgets = _budgets(plan, scan.stats)
    if budgets is None:
        return False
    est, known, real = _eligible_tokens(plan, scan)
    for key, g in _groups(plan, scan.pool, groups).items():
        have = float(real[g].sum()) + float(est[g][~known[g]].sum())
        if have < plan.cfg.margin * budgets.get(key, 0):
            return False
    return True


def _eligible_tokens(plan: ScanPlan, scan: ScanResult) -> tuple[np.ndarray, ...]:
    """Per candidate: estimated eligible tokens, whether its eligibility is known (tokenized,
    or proved short by the token bound), real eligible tokens."""
    c, T = scan.pool.cand, plan.cfg.long_threshold
    ratio = scan.stats.ratios_of(scan.pool.names)[c["domain"]]
    est = estimated_eligible(scan.stats.candidate_tokens(c["nbytes"], ratio), c["kept"], T)
    known = c["length"] != NOT_ASKED
    real = np.where((c["length"] >= 0) & (c["kept"] | is_long(c["length"], T)), c["length"], 0)
    return est, known, real


def _held_wants(plan: ScanPlan, scan: ScanResult,
                cuts: dict[str, tuple[int | None, int]]) -> np.ndarray:
    """Held-out documents the next round must tokenize: per domain, in held-out priority
    order, as far as choosing whole documents up to ``eval_tokens`` can reach."""
    h = scan.pool.held
    want = np.zeros(len(h), bool)
    if not plan.cfg.heldout_fraction or not len(h):
        return want
    seq_len = plan.cfg.eval_seq_len or plan.cfg.seq_len
    budget = parse_count(str(plan.cfg.eval_tokens), name="eval_tokens")
    ratio = scan.stats.ratios_of(scan.pool.names)[h["domain"]]
    est = np.minimum(scan.stats.candidate_tokens(h["nbytes"], ratio), seq_len)
    tokenized = h["length"] >= 0
    real = np.where(tokenized, np.minimum(h["length"], seq_len), 0)
    order = np.lexsort((h["row"], h["file"], h["priority"]))
    by_code = split_by_code(h["domain"][order], len(scan.pool.names))
    for name, mine in zip(scan.pool.names, by_code, strict=True):
        g = order[mine]
        if not len(g):
            continue
        cut, ext = cuts.get(name, (None, 0))
        d = decide(h["priority"][g], est[g], tokenized[g], real[g], budget, cut, ext)
        cuts[name] = (d.cutoff, d.extensions)
        if d.status == TOKENIZE:
            inner = g[: inside(h["priority"][g], d.cutoff)]
            want[inner[~tokenized[inner]]] = True
    return want


def _round(plan: ScanPlan, scan: ScanResult, want: np.ndarray, held_want: np.ndarray,
           bar: Any) -> None:
    """Tokenize the wanted candidates and held-out documents, file by file in reading order."""
    pool = scan.pool
    rnd = pool.rounds
    tasks = []
    for s in scan.summaries:
        f = s["index"]
        rows = _rows_of(pool.cand, f, want)
        held = _rows_of(pool.held, f, held_want)
        for p in scan.parts[f].parts:  # the file's ranges, each scanned apart
            mine = rows[np.searchsorted(rows, p.cand_first):
                        np.searchsorted(rows, p.cand_first + p.cand_count)]
            mine_held = held[np.searchsorted(held, p.held_first):
                             np.searchsorted(held, p.held_first + p.held_count)]
            if len(mine) or len(mine_held):
                tasks.append(ScanTask(index=f, round=rnd, work_dir=str(plan.work),
                                      scan_hash=plan.scan_hash, tokenizer=plan.spec,
                                      long_threshold=plan.cfg.long_threshold, rows=mine,
                                      held_rows=mine_held, part=p.part,
                                      row_offset=p.cand_first, held_offset=p.held_first))
    round_bar = bar.add_task(f"tokenize (round {rnd + 1})", total=len(tasks))

    def on_result(summary: dict[str, Any]) -> bool:
        pool.record(plan.work, summary["index"], spill_key(rnd, summary["part"]),
                    summary["spilled"])
        scan.scans.append(summary)
        bar.advance(round_bar)
        _result_done(scan)
        return False

    size = int(pool.cand["nbytes"][want].sum() + pool.held["nbytes"][held_want].sum())
    _run(plan, f"round-{rnd:03d}", scan_file, tasks, load_done, on_result,
         here=size < SMALL_ROUND_BYTES)
    pool.rounds += 1
    c = pool.cand
    scan.stats.set_candidates(pool.names, c["domain"], c["nbytes"], c["kept"], c["length"])


def _rows_of(table: Any, file: int, want: np.ndarray) -> np.ndarray:
    """Rows (in the file's index) of the wanted entries of ``file``."""
    first, n = table.first[file], table.count[file]
    return np.flatnonzero(want[first : first + n]).astype(np.int64)


