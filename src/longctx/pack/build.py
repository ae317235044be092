"""``data build``: corpus -> eligible documents -> exact-budget selection -> packed shards.

Steps (each one deterministic from the config and the seed):

1. Resolve inputs into files; give every file a stable id (its path relative to the common
   folder) and every document the id ``<file id>:<line>``.
2. Scan files in a seeded order (:mod:`longctx.pack.scan` in worker processes, results
   consumed in order). A file's scan is spilled to ``OUT/.work`` with a marker, so an
   interrupted build that is rerun reuses it. With ``subset`` on, a domain whose budget is
   covered ``margin`` times over by eligible tokens is frozen (later files add nothing to its
   pool and skip tokenizing it, like the paper's code skips full sources), and scanning stops
   once every budget is covered: a budget far below the corpus does not cost a tokenizer
   pass over the corpus. Freezes and the stop point depend only on the files before them,
   never on worker count or timing.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from longctx.cliopts import opt, weights_flag
from longctx.config import ConfigError, parse_count, to_dict
from longctx.data.readers import DataError, expand_inputs
from longctx.data.workers import prestart, run_ordered, stop_forkserver
from longctx.mix.input_stats import InputStats
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
from longctx.pack.packer import Piece, pack_rows
from longctx.pack.scan import (
    FROZEN_FILE,
    STAT_KEYS,
    ScanTask,
    init_worker,
    load_done,
    scan_file,
    write_frozen,
)
from longctx.pack.shards import FORMAT_VERSION, ShardWriter
from longctx.pack.spill import SpillReader, load_eligible
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
        """The config that decides the output (workers/out/force do not)."""
        d = to_dict(self)
        for k in ("workers", "out", "force"):
            d.pop(k)
        return d


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
    """Test hook: ``scan:N``/``pack:N`` raise after N files/shards; ``slow:S`` sleeps S s
    after each file (so a test can kill the process mid-build)."""
    spec = os.environ.get(FAIL_HOOK_ENV, "")
    if spec == f"{phase}:{count}":
        raise RuntimeError(f"simulated interruption ({FAIL_HOOK_ENV}={spec})")
    if spec.startswith("slow:") and phase == "scan":
        import time

        time.sleep(float(spec[5:]))


# ----------------------------------------------------------------------------- the build


@dataclass
class ScanPlan:
    """Everything decided before the first file is read (shared by ``run_build`` and the
    distributed pre-scan, which must produce the very same per-file scans)."""

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
    tasks: list[ScanTask]  # in the seeded reading order


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
    order = sorted(range(len(files)), key=lambda i: (_file_order_key(cfg.seed, rels[i]), rels[i]))
    tasks = [
        ScanTask(
            index=i, path=str(files[i]), rel=rels[i], work_dir=str(work), scan_hash=scan_hash,
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
    (plan.work / FROZEN_FILE).unlink(missing_ok=True)  # a new run freezes from scratch


def run_build(cfg: BuildConfig, *, progress: bool | None = None) -> dict[str, Any]:
    """Build the packed mixture described by ``cfg``; return its manifest."""
    timer = Timer().__enter__()
    started = False
    if cfg.workers > 1:
        from longctx.data.tokenizer import resolve_tokenizer_dir

        started = prestart(scan_file, resolve_tokenizer_dir(cfg.tokenizer)[1] / "tokenizer.json")
    try:
        with stage_output(cfg.out or "", STAGE, force=cfg.force, inputs=cfg.inputs):
            return _build(cfg, progress, timer)
    finally:
        if started:
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
        shards = pack_selection(plan, chosen, bar)
    heldout = (
        write_heldout(out / HELDOUT_DIR, plan.work, scan.summaries, cfg, plan.tok,
                      plan.tok.dtype, chosen.vocab)
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
    """What the scan of the files read left for selection (their spills are in ``plan.work``)."""

    summaries: list[dict[str, Any]]  # per file read, in reading order: its scan marker
    pools: list[set[str]]  # per file read: the domains whose documents it contributes
    stats: InputStats  # per-domain input statistics of the files read


def scan_inputs(plan: ScanPlan, bar: Any) -> ScanResult:
    """Scan files in the seeded reading order until every budget is covered (``subset``) or
    the files run out, freezing covered domains on the way (module docstring, step 2).

    The work folder must be open (:func:`open_work_dir`); ``bar`` is a progress bar."""
    cfg, strategy, work = plan.cfg, plan.strategy, plan.work
    tasks = plan.tasks
    stats = InputStats(plan.spec.specials_per_doc)
    summaries: list[dict[str, Any]] = []
    pools: list[set[str]] = []
    last_new_domain = [0]  # files read when the latest new domain first appeared

    def covered() -> bool:
        """After each file: freeze covered domains, unfreeze short ones; stop reading?

        A budget group is covered when its pool holds margin x its budget in eligible tokens;
        a covered domain is frozen (later files add nothing to its pool and skip tokenizing
        it, as the paper's code skips sources whose budget is full) and unfrozen if later
        estimates raise its budget above its pool. Nothing is frozen or stopped before
        ``min_files`` files and before the domain set has settled (no new domain in the second
        half of the files read: a corpus whose files are not mixed, e.g. one domain per file,
        is read until every domain has shown up).
        """
        n = len(summaries)
        if not cfg.subset:
            return False
        if cfg.mix and any(d not in stats.domains for d in cfg.mix):
            return False
        try:
            _, budgets = plan_budgets(strategy, plan.total, stats.token_weights(), cfg.mix,
                                      cfg.upsample)
        except MixError:
            return False
        for d in sorted(stats.frozen):
            if stats.eligible(d) < budgets.get(d, 0):
                stats.frozen.discard(d)
        if n < min(cfg.min_files, len(tasks)) or n < 2 * last_new_domain[0]:
            return False
        done = {k for k, b in budgets.items() if stats.eligible(k) >= cfg.margin * b}
        if strategy.per_domain:
            stats.frozen |= done
        return all(k in done or k in stats.frozen for k, b in budgets.items() if b)

    def make_task(k: int) -> ScanTask:
        # frozen domains need no tokenizing (if one is unfrozen before this file's result is
        # used, the file is scanned again: the output never depends on timing)
        skip = tuple(sorted(stats.frozen))
        return replace(tasks[k], covered=skip) if skip else tasks[k]

    scan_bar = bar.add_task("scan files", total=len(tasks))

    def on_result(summary: dict[str, Any]) -> bool:
        if set(summary.get("covered", [])) - stats.frozen:  # skipped a domain now needed
            summary = scan_file(make_task(len(summaries)))
        summaries.append(summary)
        pools.append(set(summary["stats"]) - stats.frozen)
        if set(summary["stats"]) - set(stats.domains):
            last_new_domain[0] = len(summaries)
        stats.add(summary)
        bar.advance(scan_bar)
        _fail_hook("scan", len(summaries))
        before = set(stats.frozen)
        stop = covered()
        if stats.frozen != before:  # running workers pick it up within 64 documents
            write_frozen(work, stats.frozen)
        return stop

    run_ordered(scan_file, len(tasks), make_task, cfg.workers, on_result, done=load_done,
                initializer=init_worker, tokenizer_json=Path(plan.spec.folder) / "tokenizer.json")
    bar.update(scan_bar, total=len(summaries), completed=len(summaries))
    return ScanResult(summaries, pools, stats)


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
    el = load_eligible(plan.work, scan.summaries, scan.pools, vocab)
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


def pack_selection(plan: ScanPlan, chosen: BudgetSelection, bar: Any) -> list[dict[str, Any]]:
    """Read the chosen pieces from the spills, pack them into rows of ``seq_len`` and write
    the shards into ``plan.out`` (module docstring, step 4); returns their manifest entries."""
    cfg, dtype, el, sel = plan.cfg, plan.tok.dtype, chosen.el, chosen.sel
    shard_rows = cfg.shard_rows or max(1, SHARD_BYTES // (cfg.seq_len * dtype.itemsize))
    reader = SpillReader(plan.work, dtype)
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


def write_heldout(
    folder: Path, work: Path, summaries: list[dict[str, Any]], cfg: BuildConfig, tok: Any,
    dtype: np.dtype, vocab: list[str],
) -> dict[str, Any]:
    """Pack the held-out documents of the files read into ``folder`` (whole documents from
    their first token, per domain up to ``eval_tokens``) and return the build manifest's
    ``heldout`` entry."""
    from longctx.mix.heldout import PAD_DOMAIN, choose_heldout, pack_heldout
    from longctx.pack.scan import heldout_paths

    seq_len = cfg.eval_seq_len or cfg.seq_len
    per_domain = parse_count(str(cfg.eval_tokens), name="eval_tokens")
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("file", "line", "domain", "length",
                                                         "priority", "start")}
    names: list[str] = []
    for s in summaries:
        info = s.get("heldout") or {}
        _, mpath = heldout_paths(work, s["index"])
        with np.load(mpath) as m:
            length = m["length"]
            local = [info["domains"][int(c)] for c in m["domain"]] if len(length) else []
            cols["file"].append(np.full(len(length), s["index"], dtype=np.int64))
            cols["line"].append(m["line"])
            cols["length"].append(length)
            cols["priority"].append(m["priority"])
            cols["start"].append(np.cumsum(length) - length)
            names.extend(local)
    all_domains = sorted(set(vocab) | set(names))
    code = {d: i for i, d in enumerate(all_domains)}
    c = {k: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64)) for k, v in cols.items()}
    c["domain"] = np.asarray([code[d] for d in names], dtype=np.int64)
    picked = choose_heldout(c["domain"], c["length"], c["priority"], per_domain, seq_len)
    rows = pack_heldout(c["length"][picked], c["priority"][picked], seq_len)
    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(folder / "shard-00000.arrow", seq_len, dtype, provenance=True,
                         num_domains=len(all_domains))
    pad_id = int(tok.eos_id if tok.eos_id is not None else 0)
    item = np.dtype(dtype).itemsize
    try:
        for row in rows:
            ids = np.full(seq_len, pad_id, dtype=dtype)
            offsets, domains, pfile, pline = [0], [], [], []
            for j, n in zip(row.docs, row.lengths, strict=True):
                i = int(picked[j])
                path = heldout_paths(work, int(c["file"][i]))[0]
                at = offsets[-1]
                ids[at : at + n] = np.fromfile(path, dtype=dtype, count=n,
                                               offset=int(c["start"][i]) * item)
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
    rel = {s["index"]: s["file"] for s in summaries}
    ids_sorted = sorted(f"{rel[int(c['file'][i])]}:{int(c['line'][i])}" for i in picked)
    tokens = np.minimum(c["length"][picked], seq_len)
    nd = len(all_domains)
    held_docs = np.bincount(c["domain"], minlength=nd)
    docs = np.bincount(c["domain"][picked], minlength=nd)
    doc_tokens = np.bincount(c["domain"][picked], weights=tokens, minlength=nd)
    entry = {
        "path": HELDOUT_DIR,
        "fraction": cfg.eval_fraction,
        "seed": cfg.eval_seed,
        "seq_len": seq_len,
        "tokens_per_domain_target": per_domain,
        "documents": int(len(picked)),
        "documents_held_out": int(len(c["length"])),
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
    inputs: dict[str, Any] = {}
    for d in vocab:
        e = est[d]
        inputs[d] = {
            "docs": e["docs"],
            "tokens": e["tokens"],
            "long_token_fraction": (e["long_tokens"] / e["tokens"]) if e["tokens"] else 0.0,
            "estimated": e["estimated"] or len(summaries) < len(tasks),
            "tokenized_docs": e["tokenized_docs"],
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
                        "domain_pool_files": {d: sum(d in p for p in scan.pools) for d in vocab}},
        "repeated": repeats,
        "warnings": warnings,
        "skipped": dict(sorted(scan.stats.skipped.items())),
        "shards": shards,
        "files": [{"path": r, "read": i in read} for i, r in enumerate(plan.rels)],
        "tokenizer": plan.tok.describe(),
        "documents_selected": int(first.sum()),
        "seconds": {"wall": round(timer.wall, 3), "cpu": round(timer.cpu, 3),
                    "scan_cpu_used_files": round(sum(s.get("cpu_s", 0.0) for s in summaries), 3)},
        "python": sys.version.split()[0],
    }


__all__ = ["BuildConfig", "BuildError", "STAT_KEYS", "plan_scan", "run_build"]
