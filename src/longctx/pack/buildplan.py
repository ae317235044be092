"""What a ``data build`` decides before reading a file: its config (:class:`BuildConfig`,
the ``longctx data build`` flags), the files and their stable ids, the tokenizer, the hashes
that say which earlier work can be reused, and pass 1's tasks in the seeded reading order
(:class:`ScanPlan`). :mod:`longctx.pack.passes` runs the passes, :mod:`longctx.pack.build`
the whole stage.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longctx.cliopts import opt, weights_flag
from longctx.config import ConfigError, parse_count, to_dict
from longctx.data import token_bound
from longctx.data.readers import DataError, expand_inputs
from longctx.mix.strategies import (
    STRATEGIES,
    MixError,
    get_strategy,
)
from longctx.pack.executors import EXECUTORS, ExecutorSettings
from longctx.pack.index import IndexTask
from longctx.pack.shards import FORMAT_VERSION
from longctx.pack.tok import TokenizerSpec, resolve_spec
from longctx.stage import config_hash

WORK_DIR = ".work"
TOKENIZER_CACHE = ".tokenizer"  # a converted tokenizer.json for workers, when one is needed
MAX_SEQ_LEN = 1 << 24  # 16M tokens per row: far beyond any model, well inside int32 offsets
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


def fail_hook(phase: str, count: int) -> None:
    """Test hook: ``scan:N``/``pack:N`` raise after N task results (a file or range indexed,
    or its scan in a round) / N shards; ``slow:S`` sleeps S s after each task result (so a
    test can kill the process mid-build)."""
    spec = os.environ.get(FAIL_HOOK_ENV, "")
    if spec == f"{phase}:{count}":
        raise RuntimeError(f"simulated interruption ({FAIL_HOOK_ENV}={spec})")
    if spec.startswith("slow:") and phase == "scan":
        import time

        time.sleep(float(spec[5:]))


# ----------------------------------------------------------------------------- the plan


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
            "token_bound": [token_bound.VERSION, token_bound.MAX_BYTES_PER_TOKEN],
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

