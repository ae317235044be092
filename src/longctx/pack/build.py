"""``data build``: corpus -> eligible documents -> exact-budget selection -> packed shards.

Steps (each one deterministic from the config and the seed):

1. Resolve inputs into files; give every file a stable id (its path relative to the common
   folder) and every document the id ``<file id>:<line>``.
2. Pass 1 indexes files in a seeded order (:mod:`longctx.pack.index` in worker processes,
   results consumed in order): every document's draws, bytes and domain, no tokenizer but a
   small sample. With ``subset`` on, indexing stops once every budget group's candidates
   hold ``margin`` x its budget in estimated eligible tokens. Pass 2 tokenizes in rounds
   (:mod:`longctx.pack.scan`) only the candidates inside each group's priority cut-off
   (:mod:`longctx.mix.cutoff`), extending it until the real eligible tokens inside meet the
   budget: selection then equals tokenizing every document of the files indexed. Every
   file's index and every round's scan is spilled to ``OUT/.work`` with a marker, so an
   interrupted build that is rerun reuses it; every decision depends only on per-file
   results consumed in order, never on worker count or timing. A file over ``split_bytes``
   is indexed and tokenized in byte ranges (:mod:`longctx.pack.parts`), merged back into
   the file's results. The tasks run in a local worker pool (``executor`` pool) or on a
   datatrove executor or Ray (:mod:`longctx.pack.executors`), with identical output.
3. Target shares (measured input token shares unless ``--mix``; ``--upsample`` multiplies)
   become exact integer budgets; :mod:`longctx.mix.select` picks pieces to fill them.
4. :mod:`longctx.pack.packer` concatenates pieces into rows; shards and ``manifest.json``
   are written.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longctx.cliopts import opt, weights_flag
from longctx.config import ConfigError, parse_count, to_dict
from longctx.data.readers import DataError, expand_inputs
from longctx.data.workers import prestart, run_ordered, stop_forkserver
from longctx.mix.cutoff import EXHAUSTED, TOKENIZE, decide, estimated_eligible, inside
from longctx.mix.input_stats import InputStats, split_by_code
from longctx.mix.select import (
    Eligible,
    Selection,
    check_budgets,
    check_output_size,
    select_pieces,
)
from longctx.mix.strategies import (
    GLOBAL_GROUP,
    STRATEGIES,
    MixError,
    expected_global_shares,
    get_strategy,
    is_long,
    plan_budgets,
    predicted_long_fraction,
)
from longctx.pack.executors import EXECUTORS, ExecutorSettings, run_tasks
from longctx.pack.index import IndexTask, index_file, load_index_done
from longctx.pack.packer import Piece, pack_rows
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
from longctx.pack.shards import FORMAT_VERSION, ShardWriter
from longctx.pack.spill import Pool, SpillReader
from longctx.pack.tok import TokenizerSpec, resolve_spec
from longctx.progress import progress_bar
from longctx.stage import Timer, config_hash, is_done, read_manifest, stage_output, write_manifest

STAGE = "data.build"
WORK_DIR = ".work"
TOKENIZER_CACHE = ".tokenizer"  # a converted tokenizer.json for workers, when one is needed
SHARD_BYTES = 256 << 20
MAX_SEQ_LEN = 1 << 24  # 16M tokens per row: far beyond any model, well inside int32 offsets
HELDOUT_DIR = "heldout"
HELDOUT_STAGE = "data.heldout"
FAIL_HOOK_ENV = "LONGCTX_BUILD_FAIL_AT"  # test hook: "scan:N" / "pack:N" raises mid-build
SPLIT_BYTES = 256 << 20
_CLUSTER = "Cluster"  # --help panel of the executor settings
# settings that decide how the build runs, never what it writes
RUN_KEYS = ("workers", "out", "force", "split_bytes", "executor", "executor_tasks",
            "executor_workers", "executor_logs", "slurm_partition", "slurm_time",
            "slurm_cpus_per_task", "slurm_mem_per_cpu_gb", "slurm_qos", "slurm_env",
            "ray_address")


def _bytes_flag(value: Any, flag: str) -> int:
    """``parse=`` for a size in bytes typed as 268435456, 256M or 0."""
    return 0 if str(value).strip() == "0" else parse_count(value, name=flag)


class BuildError(DataError):
    pass


@dataclass
class BuildConfig:
    """``longctx data build`` settings; field names are the CLI flag names."""

    inputs: list[str] = opt(factory=list, argument=True, help="Corpus files, folders or globs "
                            "(jsonl, jsonl.gz, jsonl.zst, parquet).")
    out: str | None = opt(None, "Output folder for shards and manifest.json.",
                          flags=("--out", "-o"))
    tokenizer: str | None = opt(None, "Folder with tokenizer.json (an HF model folder works); "
                                "default: embedded SmolLM2.")
    strategy: str = opt("per_source", "cut | original | per_source | global | upsample (see the "
                        "paper, Fig. 2).")
    tokens: str | None = opt(None, "Output tokens, e.g. 600K, 100M, 5B; rounded up to whole rows "
                             "of --seq-len.")
    seq_len: int = opt(8192, "Tokens per packed row.")
    long_threshold: int = opt(4096, "A document with at least this many tokens is long.")
    short_keep: float = opt(0.1, "Probability of keeping a short document (per_source, global, "
                            "upsample).")
    mix: dict[str, float] = opt(factory=dict, parse=weights_flag, help="Target domain weights "
                                "DOMAIN=W,... (default: measured input token shares).")
    upsample: dict[str, float] = opt(factory=dict, parse=weights_flag, help="Multiply domain "
                                     "weights DOMAIN=K,... then renormalise (strategy upsample).")
    text_field: str = opt("text", "Dotted path of the text in a record.")
    domain_field: str = opt("meta.redpajama_set_name", "Dotted path of the domain name in a "
                            "record.")
    seed: int = opt(42, "Seed of every random choice (keep draws, order, files).")
    workers: int = opt(1, "Worker processes (output is identical for any count).")
    strict: bool = opt(False, "Stop at the first bad record, or when a domain would repeat.",
                       flags=("--strict",))
    bos: bool = opt(True, "BOS token before every document.")  # the paper: BOS
    eos: bool = opt(False, "EOS token after every document.")  # the paper: none
    shard_rows: int = opt(0, "Rows per shard (0: about 256 MB per shard).")
    subset: bool = opt(True, "Read only a seeded subset of files that covers the budgets (with "
                       "--margin).", flags=("--subset/--read-all",))
    margin: float = opt(1.2, "The subset holds margin x each budget in eligible tokens.")
    min_files: int = opt(4, "The subset reads at least this many files (and until no new "
                         "domain shows up in the second half of the files read).")
    eval_tokens: str | None = opt(None, "Hold out documents for evaluation and pack up to this "
                                  "many of their tokens per domain into OUT/heldout (e.g. 200K); "
                                  "held-out documents are in no training row.")
    eval_fraction: float = opt(0.05, "Fraction of documents held out (by a seeded hash of their "
                               "text).")
    eval_seq_len: int = opt(0, "Held-out row length (0: --seq-len).")
    eval_seed: int = opt(0, "Seed of the held-out split (apart from --seed, so repeats share one "
                         "split).")
    force: bool = opt(False, "Rebuild even if a finished build matches; take over a folder "
                      "holding files longctx did not write (nothing there is deleted).",
                      flags=("--force",))
    split_bytes: int = opt(SPLIT_BYTES, "Files bigger than this are read in ranges of about "
                           "this size by several workers (jsonl at lines, multi-frame .zst at "
                           "frames, parquet at row groups; 0: never split). Output is the same.",
                           cli_type=str, parse=_bytes_flag, show="256Mi")
    executor: str = opt("pool", "Where the per-file (per-range) tasks run: pool (--workers "
                        "local processes) | local (datatrove LocalPipelineExecutor) | slurm "
                        "(datatrove SlurmPipelineExecutor) | ray (datatrove "
                        "RayPipelineExecutor); selection and packing run here. Same output. "
                        "local/slurm/ray need datatrove (the longctx scale extra; ray also "
                        "needs ray); for slurm and ray, --out (its .work folder), the inputs "
                        "and --executor-logs must be on a filesystem every node shares.",
                        panel=_CLUSTER)
    executor_tasks: int = opt(0, "datatrove tasks each task list is spread over (0: one per "
                              "file or range).", panel=_CLUSTER)
    executor_workers: int = opt(0, "Tasks running at once (0: --workers for local, no limit "
                                "for slurm and ray).", panel=_CLUSTER)
    executor_logs: str | None = opt(None, "datatrove's logging folder (default OUT/.work/logs, "
                                    "removed with the work folder when the build finishes).",
                                    panel=_CLUSTER)
    slurm_partition: str | None = opt(None, "Slurm partition (--executor slurm).",
                                      panel=_CLUSTER)
    slurm_time: str = opt("24:00:00", "Slurm time limit of a task.", panel=_CLUSTER)
    slurm_cpus_per_task: int = opt(1, "Slurm CPUs per task.", panel=_CLUSTER)
    slurm_mem_per_cpu_gb: int = opt(2, "Slurm memory per CPU, GB.", panel=_CLUSTER)
    slurm_qos: str = opt("", "Slurm QOS (empty: the cluster's default).", panel=_CLUSTER)
    slurm_env: str | None = opt(None, "Shell command that activates this Python environment in "
                                "a Slurm job, e.g. 'source .venv/bin/activate'.", panel=_CLUSTER)
    ray_address: str | None = opt(None, "Ray cluster address (default: a running cluster's, "
                                  "else a local one).", panel=_CLUSTER)

    @property
    def heldout_fraction(self) -> float:
        """The fraction actually held out: none unless ``eval_tokens`` asks for a split."""
        return self.eval_fraction if self.eval_tokens else 0.0

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        for key in ("seq_len", "eval_seq_len"):
            v = getattr(self, key)
            if v < (1 if key == "seq_len" else 0) or v > MAX_SEQ_LEN:
                raise ConfigError(f"{key}: must be between 1 and {MAX_SEQ_LEN:,}, got {v}")
        if not (0.0 < self.eval_fraction < 1.0) or not math.isfinite(self.eval_fraction):
            raise ConfigError(f"eval_fraction: must be in (0, 1), got {self.eval_fraction}")
        if self.long_threshold <= 0:
            raise ConfigError(f"long_threshold: must be positive, got {self.long_threshold}")
        if not 0.0 <= self.short_keep <= 1.0:
            raise ConfigError(f"short_keep: must be in [0, 1], got {self.short_keep}")
        if self.workers < 1:
            raise ConfigError(f"workers: must be >= 1, got {self.workers}")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor: expected one of {', '.join(EXECUTORS)}, "
                              f"got {self.executor!r}")
        for key in ("split_bytes", "executor_tasks", "executor_workers"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: must be >= 0, got {getattr(self, key)}")
        if self.executor == "slurm" and not self.slurm_partition:
            raise ConfigError("slurm_partition: --executor slurm needs --slurm-partition")
        if self.shard_rows < 0:
            raise ConfigError(f"shard_rows: must be >= 0, got {self.shard_rows}")
        if self.margin < 1.0:
            raise ConfigError(f"margin: must be >= 1, got {self.margin}")
        for name, weights in (("mix", self.mix), ("upsample", self.upsample)):
            for k, v in weights.items():
                if v < 0 or not math.isfinite(v):
                    raise ConfigError(f"{name}: weight for {k!r} must be >= 0, got {v}")

    def require_run_fields(self) -> None:
        if not self.inputs:
            raise ConfigError("inputs: give at least one corpus file, folder or glob")
        if not self.out:
            raise ConfigError("out: give --out DIR")
        if self.tokens is None:
            raise ConfigError("tokens: give --tokens N (e.g. 600K, 100M, 5B)")
        parse_count(self.tokens, name="tokens")
        if self.eval_tokens is not None:
            parse_count(self.eval_tokens, name="eval_tokens")

    def output_config(self) -> dict[str, Any]:
        """The config that decides the output (RUN_KEYS do not)."""
        d = to_dict(self)
        for k in RUN_KEYS:
            d.pop(k)
        return d

    def executor_settings(self, work: Path) -> ExecutorSettings:
        return ExecutorSettings(
            kind=self.executor, logs=self.executor_logs or str(work / "logs"),
            tasks=self.executor_tasks,
            workers=self.executor_workers or (self.workers if self.executor == "local" else 0),
            slurm_partition=self.slurm_partition, slurm_time=self.slurm_time,
            slurm_cpus_per_task=self.slurm_cpus_per_task,
            slurm_mem_per_cpu_gb=self.slurm_mem_per_cpu_gb, slurm_qos=self.slurm_qos,
            slurm_env=self.slurm_env, ray_address=self.ray_address)


# ----------------------------------------------------------------------------- inputs


def stable_file_ids(files: list[Path]) -> list[str]:
    """File ids relative to the inputs' common folder (independent of the working directory)."""
    parents = [str(f.resolve().parent) for f in files]
    base = Path(os.path.commonpath(parents)) if parents else Path(".")
    return [f.resolve().relative_to(base).as_posix() for f in files]


def _file_order_key(seed: int, rel: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{rel}".encode(), digest_size=8).digest()


def _inputs_fingerprint(files: list[Path], rels: list[str]) -> list[list[Any]]:
    """Raw corpus files by (id, size, mtime, ctime): a same-size edit is seen, hashing is not
    needed (see :mod:`longctx.data.identity`)."""
    from longctx.data.identity import files_identity

    return files_identity(files, rels)


def _fail_hook(phase: str, count: int) -> None:
    """Test hook: ``scan:N``/``pack:N`` raise after N task results (a file or range indexed,
    or its scan in a round) / N shards; ``slow:S`` sleeps S s after each task result (so a
    test can kill the process mid-build)."""
    spec = os.environ.get(FAIL_HOOK_ENV, "")
    if spec == f"{phase}:{count}":
        raise RuntimeError(f"simulated interruption ({FAIL_HOOK_ENV}={spec})")
    if spec.startswith("slow:") and phase == "scan":
        import time

        time.sleep(float(spec[5:]))


# ----------------------------------------------------------------------------- the build


@dataclass
class ScanPlan:
    """Everything decided before the first file is read."""

    cfg: BuildConfig
    strategy: Any
    out: Path
    work: Path
    spec: TokenizerSpec
    tok: Any
    requested: int
    rows: int
    total: int
    keep: float
    scan_hash: str
    out_cfg: dict[str, Any]
    cfg_hash: str
    rels: list[str]
    tasks: list[IndexTask]  # pass 1 of every file, in the seeded reading order


def plan_scan(cfg: BuildConfig) -> ScanPlan:
    cfg.validate()
    cfg.require_run_fields()
    strategy = get_strategy(cfg.strategy)
    if not strategy.per_domain and (cfg.mix or cfg.upsample):
        raise MixError("--strategy global ignores domains: --mix/--upsample do not apply")
    if strategy.name == "upsample" and not cfg.upsample:
        raise MixError("--strategy upsample needs --upsample DOMAIN=FACTOR[,...]")
    out = Path(str(cfg.out))
    files = expand_inputs(cfg.inputs)
    rels = stable_file_ids(files)
    by_rel = sorted(range(len(files)), key=lambda i: rels[i])  # input order must not matter
    files, rels = [files[i] for i in by_rel], [rels[i] for i in by_rel]
    spec = resolve_spec(cfg.tokenizer, add_bos=cfg.bos, add_eos=cfg.eos,
                        cache_dir=out / TOKENIZER_CACHE)
    tok = spec.load()
    requested = parse_count(str(cfg.tokens), name="tokens")
    rows = -(-requested // cfg.seq_len)
    keep = strategy.keep_probability(cfg.short_keep)
    inputs_fp = _inputs_fingerprint(files, rels)
    scan_hash = config_hash(
        {
            "format_version": FORMAT_VERSION,
            "tokenizer": tok.fingerprint,
            "bos": cfg.bos,
            "eos": cfg.eos,
            "fields": [cfg.text_field, cfg.domain_field],
            "seed": cfg.seed,
            "long_threshold": cfg.long_threshold,
            "keep": keep,
            "inputs": inputs_fp,
            **({"heldout": [cfg.heldout_fraction, cfg.eval_seed]} if cfg.heldout_fraction else {}),
        }
    )
    out_cfg = cfg.output_config()
    cfg_hash = config_hash(
        {"config": out_cfg, "tokenizer": tok.fingerprint, "inputs": inputs_fp,
         "format_version": FORMAT_VERSION}
    )
    work = out / WORK_DIR
    if cfg.executor != "pool":  # tasks may run in other folders or on other machines
        work, files = work.absolute(), [f.absolute() for f in files]
    order = sorted(range(len(files)), key=lambda i: (_file_order_key(cfg.seed, rels[i]), rels[i]))
    tasks = [
        IndexTask(
            index=i, path=str(files[i]), rel=rels[i], work_dir=str(work), index_hash=scan_hash,
            tokenizer=spec, text_field=cfg.text_field, domain_field=cfg.domain_field,
            seed=cfg.seed, long_threshold=cfg.long_threshold, keep=keep, strict=cfg.strict,
            heldout=cfg.heldout_fraction, heldout_seed=cfg.eval_seed,
        )
        for i in order
    ]
    return ScanPlan(cfg, strategy, out, work, spec, tok, requested, rows, rows * cfg.seq_len,
                    keep, scan_hash, out_cfg, cfg_hash, rels, tasks)


def open_work_dir(plan: ScanPlan) -> None:
    """Create OUT/.work, wiping scans made with different scan settings."""
    hash_file = plan.work / "scan_hash"
    if plan.work.exists() and (not hash_file.is_file() or hash_file.read_text() != plan.scan_hash):
        shutil.rmtree(plan.work)
    plan.work.mkdir(parents=True, exist_ok=True)
    hash_file.write_text(plan.scan_hash)


def run_build(cfg: BuildConfig, *, progress: bool | None = None) -> dict[str, Any]:
    """Build the packed mixture described by ``cfg``; return its manifest."""
    timer = Timer().__enter__()
    if cfg.workers > 1 and cfg.executor == "pool":  # one fork server for all its pools
        from longctx.data.tokenizer import resolve_tokenizer_dir

        prestart((count_part, index_file, scan_file),
                 resolve_tokenizer_dir(cfg.tokenizer)[1] / "tokenizer.json")
    try:
        with stage_output(cfg.out or "", STAGE, force=cfg.force, inputs=cfg.inputs):
            return _build(cfg, progress, timer)
    finally:
        stop_forkserver()


def _build(cfg: BuildConfig, progress: bool | None, timer: Timer) -> dict[str, Any]:
    plan = plan_scan(cfg)
    out = plan.out
    check_output_size(plan.rows, cfg.seq_len, np.dtype(plan.tok.dtype).itemsize,
                      free_disk=shutil.disk_usage(out if out.exists() else out.parent
                                                  if out.parent.exists() else ".").free,
                      memory=_physical_memory())
    before = read_manifest(out)
    if not cfg.force and is_done(out, plan.cfg_hash) and _outputs_intact(out, before or {}):
        manifest = dict(before or {})
        manifest["skipped_rerun"] = True
        shutil.rmtree(out / TOKENIZER_CACHE, ignore_errors=True)
        return manifest
    # Only a folder whose manifest is this stage's holds shards and work files of ours;
    # in a folder taken over with --force nothing that was there is deleted.
    owned = before is not None and before.get("stage") == STAGE
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, {"stage": STAGE, "status": "running", "format_version": FORMAT_VERSION,
                         "config": plan.out_cfg, "config_hash": plan.cfg_hash})
    open_work_dir(plan)
    with progress_bar(progress) as bar:
        scan = scan_inputs(plan, bar)
        chosen = plan_selection(plan, scan)
        if owned:
            for old in out.glob("shard-*.arrow"):
                old.unlink()
            shutil.rmtree(out / HELDOUT_DIR, ignore_errors=True)
        shards = pack_selection(plan, scan, chosen, bar)
    heldout = (
        write_heldout(out / HELDOUT_DIR, plan, scan, chosen.vocab)
        if cfg.heldout_fraction else None
    )
    timer.__exit__(None, None, None)
    manifest = _manifest(plan, scan, chosen, shards, timer)
    if heldout is not None:
        manifest["heldout"] = heldout
    write_manifest(out, manifest)
    shutil.rmtree(plan.work, ignore_errors=True)
    shutil.rmtree(out / TOKENIZER_CACHE, ignore_errors=True)
    return manifest


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
    then tokenize in rounds what selection can reach (module docstring, step 2).

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
         on_result: Any) -> bool:
    """Run ``step`` over ``tasks`` and feed the results, in order, to ``on_result`` until it
    says stop (returns True); True if it did. The pool runs them ``--workers`` at a time and
    stops early; an executor runs them all, then the results are read from the markers."""
    cfg = plan.cfg
    if cfg.executor == "pool":
        stopped = False

        def consume(result: Any) -> bool:
            nonlocal stopped
            stopped = bool(on_result(result))
            return stopped

        run_ordered(step, len(tasks), lambda k: tasks[k], cfg.workers, consume, done=done,
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
    _fail_hook("scan", scan.results)


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
        est, tokenized, real = _eligible_tokens(plan, scan)
        priority = pool.cand["priority"]
        want = np.zeros(len(tokenized), bool)
        exhausted = []
        for key, g in _groups(plan, pool, sorted(budgets)).items():
            cut, ext = cuts.get(key, (None, 0))
            d = decide(priority[g], est[g], tokenized[g], real[g], budgets[key], cut, ext)
            cuts[key] = (d.cutoff, d.extensions)
            if d.status == TOKENIZE:
                inner = g[: inside(priority[g], d.cutoff)]
                want[inner[~tokenized[inner]]] = True
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


def _refilled(plan: ScanPlan, scan: ScanResult, groups: list[str]) -> bool:
    """Stop indexing more files for groups that ran dry? Once their real eligible tokens
    plus the estimate of the candidates not tokenized yet hold ``margin`` x their budget."""
    budgets = _budgets(plan, scan.stats)
    if budgets is None:
        return False
    est, tokenized, real = _eligible_tokens(plan, scan)
    for key, g in _groups(plan, scan.pool, groups).items():
        have = float(real[g].sum()) + float(est[g][~tokenized[g]].sum())
        if have < plan.cfg.margin * budgets.get(key, 0):
            return False
    return True


def _eligible_tokens(plan: ScanPlan, scan: ScanResult) -> tuple[np.ndarray, ...]:
    """Per candidate: estimated eligible tokens, tokenized or not, real eligible tokens."""
    c, T = scan.pool.cand, plan.cfg.long_threshold
    ratio = scan.stats.ratios_of(scan.pool.names)[c["domain"]]
    est = estimated_eligible(scan.stats.candidate_tokens(c["nbytes"], ratio), c["kept"], T)
    tokenized = c["length"] >= 0
    real = np.where(tokenized & (c["kept"] | is_long(c["length"], T)), c["length"], 0)
    return est, tokenized, real


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

    _run(plan, f"round-{rnd:03d}", scan_file, tasks, load_done, on_result)
    pool.rounds += 1
    c = pool.cand
    scan.stats.set_candidates(pool.names, c["domain"], c["nbytes"], c["kept"], c["length"])


def _rows_of(table: Any, file: int, want: np.ndarray) -> np.ndarray:
    """Rows (in the file's index) of the wanted entries of ``file``."""
    first, n = table.first[file], table.count[file]
    return np.flatnonzero(want[first : first + n]).astype(np.int64)


@dataclass
class BudgetSelection:
    """The selection step's outcome: budgets and the pieces that fill them exactly."""

    est: dict[str, dict[str, Any]]  # per-domain input estimates (InputStats.estimate)
    vocab: list[str]  # sorted domain names; the shards' domain codes index it
    shares: dict[str, float]  # target shares
    budgets: dict[str, int]  # per budget group (a domain, or GLOBAL_GROUP): exact tokens
    el: Eligible  # every eligible document of the files read
    sel: Selection  # the pieces, in packing order


def plan_selection(plan: ScanPlan, scan: ScanResult) -> BudgetSelection:
    """Turn the scan into exact integer budgets and choose the pieces that fill them
    (module docstring, step 3); raises :class:`BuildError` when they cannot be filled."""
    cfg, strategy, stats = plan.cfg, plan.strategy, scan.stats
    est = stats.estimate()
    vocab = sorted(est)
    if not vocab:
        raise BuildError(f"no usable documents in {len(scan.summaries)} input file(s); "
                         f"skipped: {dict(stats.skipped)}")
    unknown = sorted(set(cfg.mix) - set(vocab))
    if unknown:
        raise BuildError(f"--mix names domain(s) not found in the input: {', '.join(unknown)} "
                         f"(found: {', '.join(vocab)})")
    shares, budgets = plan_budgets(strategy, plan.total, stats.token_weights(), cfg.mix,
                                   cfg.upsample)
    el = scan.pool.eligible(vocab, cfg.long_threshold)
    if strategy.per_domain:
        groups = {d: np.flatnonzero(el.domain == i) for i, d in enumerate(vocab)}
    else:
        groups = {GLOBAL_GROUP: np.arange(len(el))}
    empty = [k for k, b in budgets.items() if b and not len(groups.get(k, ()))]
    if empty:
        raise BuildError(
            f"no eligible documents for {', '.join(empty)} (budget > 0): every document there "
            f"is shorter than --long-threshold {cfg.long_threshold} and none was kept by "
            f"--short-keep {cfg.short_keep}; raise --short-keep or set --mix"
        )
    check_budgets(budgets, {k: int(el.length[g].sum()) for k, g in groups.items()})
    sel = select_pieces(el, groups, budgets, chunk=cfg.long_threshold if strategy.chunk else None)
    repeated = {k: g for k, g in sel.groups.items() if g.repeated_tokens}
    if repeated and cfg.strict:
        k, g = next(iter(sorted(repeated.items())))
        raise BuildError(
            f"--strict: {k} has {g.available} eligible tokens in the input but its budget is "
            f"{g.budget}; its documents would be repeated {g.epochs} times"
        )
    assert int(sel.length.sum()) == plan.total
    return BudgetSelection(est, vocab, shares, budgets, el, sel)


def pack_selection(plan: ScanPlan, scan: ScanResult, chosen: BudgetSelection,
                   bar: Any) -> list[dict[str, Any]]:
    """Read the chosen pieces from the spills, pack them into rows of ``seq_len`` and write
    the shards into ``plan.out`` (module docstring, step 4); returns their manifest entries."""
    cfg, dtype, el, sel = plan.cfg, plan.tok.dtype, chosen.el, chosen.sel
    shard_rows = cfg.shard_rows or max(1, SHARD_BYTES // (cfg.seq_len * dtype.itemsize))
    reader = SpillReader(plan.work, dtype, scan.pool.spilled)
    pack_bar = bar.add_task("pack rows", total=plan.rows)

    def pieces():
        for j in range(len(sel.doc)):
            i = int(sel.doc[j])
            off = int(sel.offset[j])
            toks = reader.read(int(el.file[i]), int(el.start[i]) + off, int(sel.length[j]))
            yield Piece(toks, int(el.domain[i]), int(el.file[i]), int(el.line[i]), off)

    shards: list[dict[str, Any]] = []
    writer: ShardWriter | None = None
    written = 0
    try:
        for batch in pack_rows(pieces(), cfg.seq_len, dtype, batch_rows=min(64, shard_rows)):
            r0 = 0
            while r0 < batch.rows:
                if writer is None:
                    writer = ShardWriter(plan.out / f"shard-{len(shards):05d}.arrow", cfg.seq_len,
                                         dtype, provenance=True, num_domains=len(chosen.vocab))
                take = min(batch.rows - r0, shard_rows - writer.rows)
                sl = slice(r0, r0 + take)
                writer.write(
                    batch.input_ids[sl], batch.doc_offsets[sl], batch.doc_domains[sl],
                    batch.continues[sl], {k: v[sl] for k, v in batch.provenance().items()},
                )
                r0 += take
                written += take
                bar.advance(pack_bar, take)
                if writer.rows == shard_rows:
                    shards.append(writer.close())
                    writer = None
                    _fail_hook("pack", len(shards))
        if writer is not None:
            shards.append(writer.close())
            writer = None
    finally:
        reader.close()
        if writer is not None:
            writer.close()
    assert written == plan.rows
    return shards


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _outputs_intact(out: Path, manifest: dict[str, Any]) -> bool:
    """A finished build is reused only while every file it lists is there and unchanged."""
    from longctx.stage import StageError, verified_file

    try:
        for s in manifest.get("shards", []):
            verified_file(out, s.get("path"), s.get("sha256"), what="shard")
        if isinstance(manifest.get("heldout"), dict):
            sub = out / HELDOUT_DIR
            held = read_manifest(sub) or {}
            for s in held.get("shards", []):
                verified_file(sub, s.get("path"), s.get("sha256"), what="held-out shard")
    except (StageError, AttributeError):
        return False
    return True


def write_heldout(folder: Path, plan: ScanPlan, scan: ScanResult,
                  vocab: list[str]) -> dict[str, Any]:
    """Pack the held-out documents of the files indexed into ``folder`` (whole documents from
    their first token, per domain up to ``eval_tokens``) and return the build manifest's
    ``heldout`` entry. The rounds tokenized every held-out document these can be chosen
    from, so the choice equals choosing among all of them tokenized."""
    from longctx.mix.heldout import PAD_DOMAIN, choose_heldout, pack_heldout

    cfg, tok, dtype = plan.cfg, plan.tok, plan.tok.dtype
    seq_len = cfg.eval_seq_len or cfg.seq_len
    per_domain = parse_count(str(cfg.eval_tokens), name="eval_tokens")
    h = scan.pool.held
    names = scan.pool.names
    all_domains = sorted(set(vocab) | {names[int(k)] for k in np.unique(h["domain"])})
    code = {d: i for i, d in enumerate(all_domains)}
    remap = np.asarray([code.get(d, -1) for d in names] or [0], dtype=np.int64)
    held_domain = remap[h["domain"]]
    tok_pos = np.flatnonzero(h["length"] >= 0)
    c = {"file": h["file"][tok_pos].astype(np.int64), "line": h["line"][tok_pos],
         "length": h["length"][tok_pos], "priority": h["priority"][tok_pos],
         "start": h["start"][tok_pos], "domain": held_domain[tok_pos]}
    picked = choose_heldout(c["domain"], c["length"], c["priority"], per_domain, seq_len)
    rows = pack_heldout(c["length"][picked], c["priority"][picked], seq_len)
    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(folder / "shard-00000.arrow", seq_len, dtype, provenance=True,
                         num_domains=len(all_domains))
    pad_id = int(tok.eos_id if tok.eos_id is not None else 0)
    reader = SpillReader(plan.work, dtype, scan.pool.spilled)
    try:
        for row in rows:
            ids = np.full(seq_len, pad_id, dtype=dtype)
            offsets, domains, pfile, pline = [0], [], [], []
            for j, n in zip(row.docs, row.lengths, strict=True):
                i = int(picked[j])
                at = offsets[-1]
                ids[at : at + n] = reader.read(int(c["file"][i]), int(c["start"][i]), n)
                offsets.append(at + n)
                domains.append(int(c["domain"][i]))
                pfile.append(int(c["file"][i]))
                pline.append(int(c["line"][i]))
            if row.padding:  # a padding piece: never scored
                offsets.append(seq_len)
                domains.append(PAD_DOMAIN)
                pfile.append(-1)
                pline.append(-1)
            writer.write(
                ids[None, :], [offsets], [domains], [False],
                {"piece_file": [pfile], "piece_line": [pline], "piece_start": [[0] * len(pfile)]},
            )
        shard = writer.close()
    except BaseException:
        writer.close()
        raise
    finally:
        reader.close()
    rel = {s["index"]: s["file"] for s in scan.summaries}
    ids_sorted = sorted(f"{rel[int(c['file'][i])]}:{int(c['line'][i])}" for i in picked)
    tokens = np.minimum(c["length"][picked], seq_len)
    nd = len(all_domains)
    held_docs = np.bincount(held_domain, minlength=nd)
    docs = np.bincount(c["domain"][picked], minlength=nd)
    doc_tokens = np.bincount(c["domain"][picked], weights=tokens, minlength=nd)
    entry = {
        "path": HELDOUT_DIR,
        "fraction": cfg.eval_fraction,
        "seed": cfg.eval_seed,
        "seq_len": seq_len,
        "tokens_per_domain_target": per_domain,
        "documents": int(len(picked)),
        "documents_held_out": int(len(h)),
        "documents_tokenized": int(len(tok_pos)),
        "documents_held_out_per_domain": {d: int(held_docs[k]) for d, k in code.items()
                                          if held_docs[k]},
        "tokens": int(tokens.sum()),
        "padding_tokens": int(sum(r.padding for r in rows)),
        "truncated_documents": int(np.sum(c["length"][picked] > seq_len)),
        "domains": {d: {"documents": int(docs[k]), "tokens": int(doc_tokens[k])}
                    for d, k in code.items() if docs[k]},
        "doc_ids_sha256": hashlib.sha256("\n".join(ids_sorted).encode()).hexdigest(),
        "rule": "a document is held out when blake2b(text, key=eval_seed) < eval_fraction; "
                "held-out documents are in no training row of any strategy built with the same "
                "eval_fraction and eval_seed",
    }
    write_manifest(folder, {
        "stage": HELDOUT_STAGE, "status": "done", "format_version": FORMAT_VERSION,
        "config_hash": config_hash(entry), "seq_len": seq_len, "num_sequences": len(rows),
        "dtype": np.dtype(dtype).name, "domain_vocab": all_domains, "tokenizer": tok.describe(),
        "shards": [shard], "heldout": entry,
    })
    return entry


def _manifest(
    plan: ScanPlan, scan: ScanResult, chosen: BudgetSelection, shards: list[dict[str, Any]], timer: Timer,
) -> dict[str, Any]:
    cfg, keep, total, tasks = plan.cfg, plan.keep, plan.total, plan.tasks
    vocab, est, shares, budgets = chosen.vocab, chosen.est, chosen.shares, chosen.budgets
    sel, el, summaries = chosen.sel, chosen.el, scan.summaries
    T = cfg.long_threshold
    doms = el.domain[sel.doc]
    long = is_long(el.length[sel.doc], T)
    nd = len(vocab)
    tokens = np.bincount(doms, weights=sel.length, minlength=nd)
    long_tokens = np.bincount(doms, weights=sel.length * long, minlength=nd)
    first = (sel.offset == 0) & (sel.epoch == 0)
    L = {d: est[d]["long_tokens"] for d in vocab}
    S = {d: est[d]["short_tokens"] for d in vocab}
    expected = expected_global_shares(L, S, keep) if not budgets.keys() - {GLOBAL_GROUP} else {}
    domains: dict[str, Any] = {}
    for i, d in enumerate(vocab):
        mask = doms == i
        g = sel.groups.get(d) or sel.groups.get(GLOBAL_GROUP)
        entry = {
            "target_share": shares.get(d) if shares else None,
            "target_tokens": budgets.get(d) if d in budgets else None,
            "tokens": int(tokens[i]),
            "share": float(tokens[i] / total) if total else 0.0,
            "long_token_fraction": float(long_tokens[i] / tokens[i]) if tokens[i] else 0.0,
            "predicted_long_token_fraction": predicted_long_fraction(L[d], S[d], keep),
            "docs": int(np.unique(sel.doc[mask]).size),
            "pieces": int(mask.sum()),
            "available_tokens": est[d]["eligible_tokens"],
        }
        if expected:
            entry["expected_share"] = expected.get(d, 0.0)
        if d in sel.groups:
            entry["epochs"] = g.epochs
            entry["repeated_tokens"] = g.repeated_tokens
        domains[d] = entry
    all_long = float(long_tokens.sum() / total) if total else 0.0
    tokenized = scan.pool.tokenized_docs()
    tokenized_tokens = scan.pool.tokenized_tokens()
    inputs: dict[str, Any] = {}
    for d in vocab:
        e = est[d]
        inputs[d] = {
            "docs": e["docs"],
            "tokens": e["tokens"],
            "long_token_fraction": (e["long_tokens"] / e["tokens"]) if e["tokens"] else 0.0,
            "estimated": e["estimated"] or len(summaries) < len(tasks),
            "tokenized_docs": tokenized.get(d, 0),
            "tokenized_tokens": tokenized_tokens.get(d, 0),
            "sample_docs": e["sample_docs"],
            "tokens_per_byte": e["tokens_per_byte"],
            "bytes": e["bytes"],
            "long_tokens": e["long_tokens"],
            "eligible_tokens": e["eligible_tokens"],
        }
    repeats = {k: {"epochs": g.epochs, "repeated_tokens": g.repeated_tokens,
                   "available_tokens": g.available, "budget": g.budget}
               for k, g in sel.groups.items() if g.repeated_tokens}
    warnings = [
        f"{k}: only {v['available_tokens']} eligible tokens for a budget of {v['budget']}; "
        f"documents repeated ({v['epochs']} passes)" for k, v in sorted(repeats.items())
    ]
    read = {s["index"] for s in summaries}
    return {
        "stage": STAGE,
        "status": "done",
        "format_version": FORMAT_VERSION,
        "config": plan.out_cfg,
        "config_hash": plan.cfg_hash,
        "strategy": plan.strategy.name,
        "seq_len": cfg.seq_len,
        "num_sequences": plan.rows,
        "tokens_total": total,
        "tokens_requested": plan.requested,
        "dtype": np.dtype(plan.tok.dtype).name,
        "long_threshold": T,
        "short_keep": cfg.short_keep,
        "keep_probability": keep,
        "seed": cfg.seed,
        "domain_vocab": vocab,
        "domains": domains,
        "long_token_fraction": all_long,
        "input": inputs,
        "input_files": {"total": len(tasks), "read": len(summaries),
                        "subset": len(summaries) < len(tasks),
                        "domain_pool_files": {
                            d: sum(s["stats"].get(d, {}).get("docs", 0) > 0 for s in summaries)
                            for d in vocab}},
        "repeated": repeats,
        "warnings": warnings,
        "skipped": dict(sorted(scan.stats.skipped.items())),
        "shards": shards,
        "files": [{"path": r, "read": i in read} for i, r in enumerate(plan.rels)],
        "tokenizer": plan.tok.describe(),
        "documents_selected": int(first.sum()),
        "rounds": scan.pool.rounds,
        "seconds": {"wall": round(timer.wall, 3), "cpu": round(timer.cpu, 3),
                    "scan_cpu_used_files": round(sum(s.get("cpu_s", 0.0)
                                                     for s in (*summaries, *scan.scans)), 3)},
        "python": sys.version.split()[0],
    }


__all__ = ["BuildConfig", "BuildError", "plan_scan", "run_build"]
