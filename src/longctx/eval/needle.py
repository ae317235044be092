"""Needle-in-a-haystack: the paper's protocol and RULER's magic-number needle, in token space.

The paper's script encodes the whole haystack, cuts, decodes and re-encodes it for every
cell (FACTS.md §4). We tokenize the haystack **once**, find every sentence boundary once,
and build each cell from token slices::

    [model's leading specials] + prefix + haystack[:b] + needle + haystack[b:n] + suffix

where ``n`` is chosen so the whole prompt is exactly ``length`` tokens, and ``b`` is the
largest sentence boundary <= ``int(n * depth / 100)`` (the paper's "move left until the
previous token is a period"); depth 100 appends the needle after the last context token,
as the paper does. Pieces are tokenized separately, so the seams can differ from what
re-tokenizing the joined text would give (by a token or so); the model sees exactly the
ids we count.

Cells are appended to ``cells.jsonl`` as they finish and skipped on rerun, so a long grid
can be interrupted and resumed. Under torchrun each rank runs a contiguous block of the
shared-prefix order (below) into its own partial file and rank 0 writes the outputs
(:mod:`longctx.eval.distributed`).

**Shared prefixes.** Every prompt of a run is ``pre + ctx[:b] + needle + ctx[b:n] + suffix``
over the same ``ctx``, so two prompts agree up to the shallower insertion point, and further
when they share ``b`` (then up to the shorter context). Ordered by (pre, b, needle ids, n,
suffix ids) the prompts sharing any prefix run consecutively (a depth-first walk of the
prompt trie), and :class:`~longctx.eval.generate.PromptCache` keeps one KV cache, cropped to
what the next prompt shares, so each distinct prefix is prefilled once. That is the fewest
prefill tokens exact reuse allows, short of a needle or suffix token that happens to equal
the haystack token it displaces. Responses equal per-cell prefill's (the split prefill can
round differently: at most 5e-5 in SmolLM2-135M's fp32 logits, measured on CPU);
``--no-prefix-reuse`` is that reference path. Measured in benchmarks/needle_prefix_reuse.py.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longctx.cliopts import opt
from longctx.config import to_dict
from longctx.eval import scorers
from longctx.eval.distributed import PartialLog, Ranks, claimed_by_main, merged_result
from longctx.eval.distributed import current as current_ranks
from longctx.eval.generate import (
    EvalError,
    PromptCache,
    first_line_done,
    greedy_generate,
    load_eval_model,
)
from longctx.eval.haystack import Haystack, collapse_whitespace, load_haystack
from longctx.eval.model_args import EvalModelArgs
from longctx.intervals import RULE as INTERVAL_RULE
from longctx.intervals import mean_interval
from longctx.stage import (
    config_hash,
    path_identity,
    run_hash,
    sha256_file,
    sha256_text,
    write_json_atomic,
    write_manifest,
)

# ------------------------------------------------------------------------------ protocols
PAPER_NEEDLE = (
    "\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a "
    "sunny day.\n"
)
PAPER_QUESTION = "What is the best thing to do in San Francisco?"
PAPER_TEMPLATE = (
    "<|im_start|> This is a very long story book: <book> {context} </book>.\n"
    " Based on the content of the book, Question: {question}\nAnswer:"
)
# RULER niah_single_2 (essay haystack, word key, 7-digit value), singular rewrite, base template.
RULER_NEEDLE = "One of the special magic numbers for {key} is: {value}."
RULER_TEMPLATE = (
    "A special magic number is hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the number afterwards.\n{context}\n"
    "What is the special magic number for {key} mentioned in the provided text?"
    " The special magic number for {key} mentioned in the provided text is"
)
# RULER draws keys from wonderwords' adjective x noun lists (not a dependency here); we draw
# from this small fixed list the same "adjective-noun" way, seeded per cell.
_ADJECTIVES = (
    "abundant",
    "brave",
    "calm",
    "curious",
    "eager",
    "fancy",
    "gentle",
    "hollow",
    "jolly",
    "lively",
    "mellow",
    "nimble",
    "odd",
    "proud",
    "quiet",
    "rapid",
    "shiny",
    "tidy",
    "vast",
    "witty",
)
_NOUNS = (
    "anchor",
    "badger",
    "canyon",
    "dolphin",
    "ferry",
    "garden",
    "harbor",
    "island",
    "jacket",
    "kettle",
    "lantern",
    "meadow",
    "orchard",
    "pepper",
    "quarry",
    "ribbon",
    "saddle",
    "tunnel",
    "violin",
    "walrus",
)

PAPER_LENGTHS = [int(x) for x in np.round(np.linspace(1000, 128000, 40)).astype(int)]
PAPER_DEPTHS = [int(x) for x in np.round(np.linspace(0, 100, 10)).astype(int)]
SENTENCE_END = ".!?"
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)")


@dataclass
class NeedleConfig(EvalModelArgs):
    """``longctx eval needle`` settings (defaults < YAML < flags < --set)."""

    lengths: list[int] = opt(factory=lambda: [1024, 2048, 4096],
                             help="Comma-separated total prompt lengths in tokens.")
    depths: list[int] = opt(factory=lambda: [0, 50, 100],
                            help="Comma-separated needle depths in percent (0..100).")
    paper_grid: bool = opt(False, "The paper's grid: 40 lengths 1000..128000 x 10 depths 0..100 "
                           "(overrides lengths/depths).", flags=("--paper-grid",))
    haystack: str = opt("", "Folder of .txt files (read in sorted order), a .txt file, or "
                        "RULER's JSON; default: the Python reference manual shipped with Python "
                        "(offline).")
    needle: str = opt("paper", "paper (San Francisco sandwich, word-recall headline) or ruler "
                      "(7-digit magic number, containment headline).")
    headline: str = opt("", "Headline scorer: ruler, paper_recall or rouge1 (default: the "
                        "needle's own).")
    trained_length: int | None = opt(None, "Draw the dashed trained-length line at this length.")
    max_new_tokens: int = opt(32, "Greedy decoding budget per cell.")
    stop_at_newline: bool = opt(True, "Stop once the first answer line is complete.")
    prefill_chunk: int = opt(0, "Prompt tokens per forward pass (0 = the whole prompt at once).")
    seed: int = opt(42, "Seed for RULER keys and values.")
    samples: int = opt(1, "RULER needles per cell (another key and value each); the cell score "
                       "is their mean and needle.json gets a bootstrap interval.")
    prefix_reuse: bool = opt(True, "Run cells in shared-prefix order and keep the KV cache of "
                             "the prefix a prompt shares with the previous one (same "
                             "responses); off: prefill every cell from scratch.")

    def validate(self) -> None:
        if self.needle not in ("paper", "ruler"):
            raise EvalError(f"needle: expected 'paper' or 'ruler', got {self.needle!r}")
        if self.samples < 1 or (self.samples > 1 and self.needle != "ruler"):
            raise EvalError(
                f"samples: {self.samples} needs --needle ruler (the paper's needle is one fixed "
                f"sentence) and must be >= 1"
            )
        if self.headline and self.headline not in ("ruler", "paper_recall", "rouge1"):
            raise EvalError(
                f"headline: expected ruler, paper_recall or rouge1, got {self.headline!r}"
            )
        if self.paper_grid:
            self.lengths, self.depths = list(PAPER_LENGTHS), list(PAPER_DEPTHS)
        if not self.lengths or any(x <= 0 for x in self.lengths):
            raise EvalError(f"lengths: need positive token counts, got {self.lengths}")
        if not self.depths or any(not 0 <= d <= 100 for d in self.depths):
            raise EvalError(f"depths: need percentages in 0..100, got {self.depths}")
        if self.max_new_tokens <= 0:
            raise EvalError(f"max_new_tokens must be positive, got {self.max_new_tokens}")

    @property
    def headline_scorer(self) -> str:
        return self.headline or ("ruler" if self.needle == "ruler" else "paper_recall")


# ------------------------------------------------------------------------- needle tasks
@dataclass(frozen=True)
class NeedleInstance:
    """One cell's needle: the sentence, the prompt pieces and what counts as the answer."""

    needle_text: str
    prefix: str
    suffix: str
    refs: tuple[str, ...]
    recall_expected: str


def make_instance(kind: str, seed: int, length: int, depth: int, sample: int = 0) -> NeedleInstance:
    """The needle for one cell; RULER keys/values come from a per-cell (and per-sample)
    seeded RNG."""
    if kind == "paper":
        before, after = PAPER_TEMPLATE.split("{context}")
        return NeedleInstance(
            needle_text=PAPER_NEEDLE,
            prefix=before,
            suffix=after.format(question=PAPER_QUESTION),
            refs=(scorers.PAPER_ANSWER.rstrip(".").lower(),),
            recall_expected=scorers.PAPER_ANSWER,
        )
    rng = random.Random(f"{seed}:{length}:{depth}" + (f":{sample}" if sample else ""))
    key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
    value = str(rng.randint(10**6, 10**7 - 1))
    before, after = RULER_TEMPLATE.split("{context}")
    return NeedleInstance(
        needle_text=" " + RULER_NEEDLE.format(key=key, value=value),
        prefix=before,
        suffix=after.format(key=key),
        refs=(value,),
        recall_expected=value,
    )


def template_text(kind: str) -> str:
    return PAPER_TEMPLATE if kind == "paper" else RULER_TEMPLATE


def needle_template(kind: str) -> str:
    return PAPER_NEEDLE if kind == "paper" else RULER_NEEDLE


# ------------------------------------------------------------------------ cell building
@dataclass(frozen=True)
class Cell:
    """A built prompt: exactly ``length`` ids, with where the needle sits."""

    ids: list[int]
    length: int
    depth: int
    context_tokens: int
    insert_at: int  # index into the context slice (sentence boundary)
    needle_start: int  # index of the needle's first token in ``ids``
    needle_tokens: int
    instance: NeedleInstance


def leading_special_ids(backend: Any) -> list[int]:
    """Ids the tokenizer itself puts before text (BOS for LLaMA, nothing for SmolLM2)."""
    plain = backend.encode("x", add_special_tokens=False).ids
    full = backend.encode("x", add_special_tokens=True).ids
    for k in range(len(full) - len(plain) + 1):
        if full[k : k + len(plain)] == plain:
            return list(full[:k])
    return []


def sentence_boundaries(text: str, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """Token positions j (1..n) such that token j-1 ends a sentence: it holds a . ! or ?
    that is followed by whitespace (or the end of the text) and nothing after it in the
    token but whitespace. One regex pass over the text, then a binary search per sentence."""
    if not len(offsets):
        return np.zeros(0, dtype=np.int64)
    ends = np.fromiter((e for _, e in offsets), dtype=np.int64, count=len(offsets))
    marks = np.fromiter((m.start() for m in _SENTENCE_END_RE.finditer(text)), dtype=np.int64)
    if marks.size == 0:
        return np.zeros(0, dtype=np.int64)
    tok = np.searchsorted(ends, marks, side="right")  # token i with start <= c < end_i
    ok = tok < len(offsets)
    out = [
        int(i) + 1
        for c, i in zip(marks[ok], tok[ok], strict=True)
        if offsets[i][0] <= c and not text[c + 1 : offsets[i][1]].strip()
    ]
    return np.unique(np.asarray(out, dtype=np.int64))


class CellBuilder:
    """Holds the haystack's ids and sentence boundaries; builds cells from slices."""

    def __init__(self, tokenizer: Any, haystack_text: str, max_context: int) -> None:
        self.backend = tokenizer.backend
        enc = self.backend.encode(haystack_text, add_special_tokens=False)
        ids = np.asarray(enc.ids, dtype=np.int64)
        if ids.size == 0:
            raise EvalError("haystack is empty after tokenization")
        bounds = sentence_boundaries(haystack_text, enc.offsets)
        self.source_tokens = int(ids.size)
        reps = max(1, -(-max_context // ids.size))  # re-append like the paper if too short
        self.ids = np.tile(ids, reps)
        seams = [bounds + r * ids.size for r in range(reps)]
        seams.append(np.arange(1, reps + 1, dtype=np.int64) * ids.size)
        self.bounds = np.unique(np.concatenate(seams))
        self.repeats = reps
        self.specials = leading_special_ids(self.backend)

    def encode(self, text: str) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def insertion_point(self, n: int, depth: int) -> int:
        """Largest sentence boundary <= int(n * depth / 100); depth 100 = after the last token."""
        if depth >= 100:
            return n
        target = int(n * depth / 100)
        k = int(np.searchsorted(self.bounds, target, side="right")) - 1
        return int(self.bounds[k]) if k >= 0 else 0

    def build(self, length: int, depth: int, instance: NeedleInstance) -> Cell:
        pre = self.specials + self.encode(instance.prefix)
        needle = self.encode(instance.needle_text)
        suf = self.encode(instance.suffix)
        n = length - len(pre) - len(needle) - len(suf)
        if n < 1:
            raise EvalError(
                f"length {length} is too short: prompt and needle alone take "
                f"{len(pre) + len(needle) + len(suf)} tokens"
            )
        if n > self.ids.size:
            raise EvalError(f"length {length} needs {n} haystack tokens, have {self.ids.size}")
        b = self.insertion_point(n, depth)
        ctx = self.ids[:n].tolist()
        ids = pre + ctx[:b] + needle + ctx[b:] + suf
        assert len(ids) == length
        return Cell(ids, length, depth, n, b, len(pre) + b, len(needle), instance)


def prefix_key(cell: Cell) -> tuple:
    """Sort key under which prompts sharing a prefix run consecutively (module docstring)."""
    ids, b, start = cell.ids, cell.insert_at, cell.needle_start
    after = start + cell.needle_tokens
    return (
        tuple(ids[: start - b]),
        b,
        tuple(ids[start:after]),
        cell.context_tokens,
        tuple(ids[after + cell.context_tokens - b :]),
    )


def build_needle(
    cfg: NeedleConfig, builder: CellBuilder, length: int, depth: int, sample: int
) -> Cell:
    return builder.build(length, depth, make_instance(cfg.needle, cfg.seed, length, depth, sample))


def prefix_order(
    cfg: NeedleConfig, builder: CellBuilder, cells: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """``cells`` (length, depth) ordered by the smallest :func:`prefix_key` of their needles;
    a cell's samples stay together, so resuming still loses at most the cell in progress."""
    keys = {
        c: min(prefix_key(build_needle(cfg, builder, *c, k)) for k in range(cfg.samples))
        for c in cells
    }
    return sorted(cells, key=keys.__getitem__)


# -------------------------------------------------------------------------------- running
def cell_key(length: int, depth: int) -> str:
    return f"{length}:{depth}"


def _read_done(log: PartialLog, chash: str) -> dict[str, dict[str, Any]]:
    return {cell_key(r["length"], r["depth"]): r for r in log.records()
            if r.get("cell_hash") == chash}


def _cell_settings(cfg: NeedleConfig, hay: Haystack) -> dict[str, Any]:
    """Everything a cell's result depends on (not the plot-only fields)."""
    return {
        "model": cfg.model,
        "model_identity": path_identity(cfg.model),  # a retrained model in the same folder
        "needle": cfg.needle,
        "haystack_sha256": hay.sha256,
        "rope_theta": cfg.rope_theta,
        "max_new_tokens": cfg.max_new_tokens,
        "stop_at_newline": cfg.stop_at_newline,
        "dtype": cfg.dtype,
        "seed": cfg.seed,
        **({"samples": cfg.samples} if cfg.samples > 1 else {}),
        "template": template_text(cfg.needle),
        "scorer": scorers.SCORER_VERSION,
    }


def run_needle(
    cfg: NeedleConfig, out_dir: str | Path, *, progress: bool | None = None, force: bool = False
) -> dict:
    """Claim ``out_dir`` (lock, foreign-folder and input-overlap checks), then run; under
    torchrun the cells are shared over the ranks (:mod:`longctx.eval.distributed`)."""
    ranks = current_ranks()
    with claimed_by_main(ranks, out_dir, "eval.needle", run_hash(cfg), force=force,
                         inputs=[cfg.haystack, cfg.model]):
        return _run_needle(cfg, out_dir, ranks, progress=progress)


def _run_needle(
    cfg: NeedleConfig, out_dir: str | Path, ranks: Ranks, *, progress: bool | None = None
) -> dict:
    """Evaluate this rank's share of the grid; rank 0 then writes ``needle.json``,
    ``needle.png``, ``manifest.json`` and every rank returns the needle.json content.
    Finished cells in ``cells.jsonl`` (and the ranks' partial files) are reused."""
    from longctx.data.tokenizer import load_tokenizer

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = load_haystack(cfg.haystack or None)
    hay = (
        Haystack(collapse_whitespace(raw.text), raw.source, raw.files)
        if cfg.needle == "ruler"
        else raw
    )
    chash = config_hash(_cell_settings(cfg, hay))
    log = PartialLog(out, "cells", ranks)
    done = _read_done(log, chash)
    ranks.barrier()  # every rank has read the finished cells before any rank appends
    grid = [(L, d) for L in cfg.lengths for d in cfg.depths]
    todo = [(L, d) for L, d in grid if cell_key(L, d) not in done]

    from longctx.models import resolve_model_dir

    folder = resolve_model_dir(cfg.model)
    tok = load_tokenizer(folder)
    builder = CellBuilder(tok, hay.text, max(cfg.lengths)) if todo else None
    prompts = PromptCache() if cfg.prefix_reuse else None
    order = prefix_order(cfg, builder, todo) if prompts is not None else todo
    mine = ranks.share(order, weights=[L for L, _ in order])
    model = None
    if mine:
        model, _ = load_eval_model(
            cfg.model,
            rope_theta=cfg.rope_theta,
            max_length=max(cfg.lengths),
            dtype=cfg.dtype,
            device=ranks.device(cfg.device),
        )

    from longctx.progress import progress_bar

    with progress_bar(progress if ranks.is_main else False, transient=True) as bar, \
            log.sink() as write:
        task = bar.add_task(f"needle ({cfg.needle})", total=len(mine))
        for length, depth in mine:
            rec = _run_cell(cfg, model, tok, builder, length, depth, prompts)
            rec["cell_hash"] = chash
            write(rec)
            bar.advance(task)
    from_cache = ranks.total(prompts.reused_tokens if prompts is not None else 0)

    def write_outputs() -> dict:
        return _write_needle(cfg, out, ranks, t0, raw, hay, chash, tok, folder, builder,
                             grid, todo, from_cache, _read_done(log, chash))

    return merged_result(ranks, log, write_outputs, out / "needle.json")


def _write_needle(
    cfg: NeedleConfig, out: Path, ranks: Ranks, t0: float, raw: Haystack, hay: Haystack,
    chash: str, tok: Any, folder: Path, builder: CellBuilder | None,
    grid: list[tuple[int, int]], todo: list[tuple[int, int]], from_cache: int,
    done: dict[str, dict[str, Any]],
) -> dict:
    """needle.json, needle.png and manifest.json from the finished cells (rank 0)."""
    from longctx.plotting import needle_figure, save_png

    head = cfg.headline_scorer
    cells = []
    for L, d in grid:
        rec = dict(done[cell_key(L, d)])
        rec.pop("cell_hash", None)
        rec["score"] = rec["scores"][head]
        cells.append(rec)
    average = float(np.mean([c["score"] for c in cells]))
    trials = np.asarray([t["scores"][head] for c in cells for t in c.get("samples") or [c]])
    result = {
        "stage": "eval.needle",
        "model": cfg.model,
        "model_identity": path_identity(cfg.model),  # a retrained model in the same folder
        "needle": cfg.needle,
        "headline": head,
        "average": average,
        "samples_per_cell": cfg.samples,
        "trials": int(trials.size),
        "average_interval95": mean_interval(trials),
        "interval_rule": f"{INTERVAL_RULE} over needles (cells x samples)",
        "averages": {
            k: float(np.mean([c["scores"][k] for c in cells])) for k in cells[0]["scores"]
        },
        "trained_length": cfg.trained_length,
        "lengths": list(cfg.lengths),
        "depths": list(cfg.depths),
        "cells": cells,
        "provenance": {
            "haystack": raw.describe()
            | {"sha256_used": hay.sha256, "whitespace_collapsed": cfg.needle == "ruler"},
            "needle_template": needle_template(cfg.needle),
            "needle_sha256": sha256_text(needle_template(cfg.needle)),
            "prompt_template": template_text(cfg.needle),
            "prompt_template_sha256": sha256_text(template_text(cfg.needle)),
            "scorer_version": scorers.SCORER_VERSION,
            "scorer_version_sha256": sha256_text(scorers.SCORER_VERSION),
            "tokenizer": tok.describe(),
            "model_dir": str(folder),
            "rope_theta": cfg.rope_theta,
            "decoding": {
                "greedy": True,
                "max_new_tokens": cfg.max_new_tokens,
                "stop_at_newline": cfg.stop_at_newline,
            },
            "haystack_tokens": builder.source_tokens if builder else None,
        },
    }
    write_json_atomic(out / "needle.json", result)
    save_png(needle_figure(result), out / "needle.png")
    write_manifest(
        out,
        {
            "stage": "eval.needle",
            "status": "done",
            "config": to_dict(cfg),
            "config_hash": run_hash(cfg),
            "cell_hash": chash,
            "counts": {
                "cells": len(cells),
                "computed_now": len(todo),
                "reused": len(grid) - len(todo),
            },
            "prefill": {
                "prefix_reuse": cfg.prefix_reuse,
                "prompt_tokens": sum(L for L, _ in todo) * cfg.samples,
                "tokens_from_cache": from_cache,
            },
            "world_size": ranks.world,
            "average": average,
            "checksums": {
                "needle.json": sha256_file(out / "needle.json"),
                "needle.png": sha256_file(out / "needle.png"),
            },
            "seconds": time.perf_counter() - t0,
        },
    )
    return result


def _run_cell(
    cfg: NeedleConfig,
    model: Any,
    tok: Any,
    builder: CellBuilder,
    length: int,
    depth: int,
    prompts: PromptCache | None,
) -> dict[str, Any]:
    """One cell: ``samples`` needles at this length and depth; scores are their means. With
    ``prompts`` the needles run in prefix order (results stay in sample order)."""
    t0 = time.perf_counter()
    cells = [build_needle(cfg, builder, length, depth, k) for k in range(cfg.samples)]
    order = range(cfg.samples)
    if prompts is not None:
        order = sorted(order, key=lambda k: prefix_key(cells[k]))
    by_sample = {k: _run_needle_once(cfg, model, tok, cells[k], prompts) for k in order}
    runs = [by_sample[k] for k in range(cfg.samples)]
    rec = dict(runs[0])
    rec["seconds"] = time.perf_counter() - t0
    if cfg.samples > 1:
        rec["scores"] = {k: float(np.mean([r["scores"][k] for r in runs])) for k in runs[0]["scores"]}
        rec["samples"] = [{k: r[k] for k in ("scores", "response", "answers")} for r in runs]
    return rec


def _run_needle_once(
    cfg: NeedleConfig, model: Any, tok: Any, cell: Cell, prompts: PromptCache | None
) -> dict[str, Any]:
    t0 = time.perf_counter()
    inst = cell.instance
    stop_ids = [i for i in (tok.eos_id,) if i is not None]
    new = greedy_generate(
        model,
        cell.ids,
        max_new_tokens=cfg.max_new_tokens,
        stop_ids=stop_ids,
        decode=lambda ids: tok.decode(ids, skip_special_tokens=True),
        stop_text=first_line_done if cfg.stop_at_newline else None,
        prefill_chunk=cfg.prefill_chunk,
        prompt_cache=prompts,
    )
    response = tok.decode(new, skip_special_tokens=True).strip()
    return {
        "length": cell.length,
        "depth": cell.depth,
        "scores": scorers.needle_scores(
            response, inst.refs, inst.recall_expected, inst.needle_text
        ),
        "response": response,
        "answers": list(inst.refs),
        "seconds": time.perf_counter() - t0,
        "prompt_tokens": len(cell.ids),
        "new_tokens": len(new),
        "needle_depth_actual": cell.insert_at / cell.context_tokens,
    }
