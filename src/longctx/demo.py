"""``longctx demo``: the whole pipeline on embedded defaults, offline, on CPU — and what it
really measured, with its noise.

Each step runs a real ``longctx`` command in-process with an argument list, exactly as a
user would type it, so the demo exercises the same CLI contracts (flags, manifests, output
files). Stages skip themselves when their manifest says done, so a rerun reuses finished
work. A stage that is missing or fails stops the demo with a message naming it.

Loss is measured on the build's held-out documents only (no training row holds them). The
headline (console and the top of the report, ``demo.json``) gives every before/after
difference beside its noise band: a paired bootstrap over the same held-out documents (and
the seed-to-seed spread when ``seeds`` repeats the training), and for the needle a paired
bootstrap over the same needles. It also says how far this training is from the paper's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from longctx.cliopts import flag_command, opt
from longctx.errors import LongctxError
from longctx.intervals import mean_interval, paired_loss_difference, spread
from longctx.stage import manifest_bytes

MODEL = "smollm2-135m"
NATIVE_CONTEXT = 8192  # SmolLM2-135M's pretraining context
PAPER = {"tokens": 5_000_000_000, "seq_len": 80_000, "model": "LLaMA-2-7B"}
SUMMARY = "demo.json"


class DemoError(LongctxError):
    """A demo step could not run; the message names the step and the command."""


@dataclass
class DemoPlan:
    """Sizes chosen by measurement so ``make demo`` fits 20 minutes on 2 CPU cores.

    Measured on a quiet 2-core machine (SmolLM2-135M, fp32): a training step of two
    1,024-token rows takes about 16 s without activation checkpointing (125 tokens/s); held-out
    loss over three 10,240-token rows about 120 s per model; a RULER needle at 10,240 tokens
    about 52 s (prefill is quadratic: ~42 s at 9,216), at 2,048 about 10 s. A second training
    seed (16 steps plus its loss) would add about 7 minutes and does not fit, so the noise
    band is the paired bootstrap over held-out documents and needles; `longctx ablate`
    repeats seeds where the budget allows. 16 steps at lr 1e-4 with base 1e6 lowered
    held-out loss at 0-1,024 from 2.576 to 2.454 in a measured run; 12 steps keep the demo
    inside its budget.
    """

    corpus_mb: float = 3.0
    seq_len: int = 1024  # training rows
    batch_tokens: int = 2048  # two rows per step
    steps: int = 12
    seeds: list[int] = field(default_factory=lambda: [0])  # more seeds: seed-to-seed spread
    rope_theta: float = 1e6
    lr: float = 1e-4
    eval_tokens: str = "5K"  # held-out tokens per domain (about 27K in all: 3 rows)
    eval_fraction: float = 0.1  # enough long documents held out to measure 4K-9K
    eval_seq_len: int = 9216  # held-out rows reach beyond the 8K native context
    loss_buckets: str = "0-1024,1024-4096,4096-9216"
    loss_positions: str = "1024,4096,8192,9216"
    needle_lengths: list[int] = field(default_factory=lambda: [2048, 9216])
    needle_depths: list[int] = field(default_factory=lambda: [0, 100])
    needle_samples: int = 2  # needles per cell: 8 per model, a measured noise level
    max_new_tokens: int = 12  # a 7-digit RULER value is 7 digit tokens in SmolLM2
    precision: str = "fp32"
    quick_mode: bool = False

    @classmethod
    def full(cls) -> DemoPlan:
        return cls()

    @classmethod
    def quick(cls) -> DemoPlan:
        return cls(
            corpus_mb=1.0, seq_len=512, batch_tokens=1024, steps=2, seeds=[0],
            eval_tokens="1K", eval_seq_len=1024, loss_buckets="0-256,256-1024",
            loss_positions="256,1024", needle_lengths=[512, 1024], needle_depths=[0, 100],
            needle_samples=1, quick_mode=True,
        )


@dataclass
class Step:
    name: str
    folder: Path
    argv: list[str]
    what: str


def _folders(out: Path, plan: DemoPlan) -> dict[str, Path]:
    f = {"corpus": out / "corpus", "stats": out / "stats", "data": out / "data",
         "needle-before": out / "needle-before", "loss-before": out / "loss-before",
         "needle-after": out / "needle-after"}
    for s in plan.seeds:
        f[f"train-{s}"] = out / f"train-seed{s}"
        f[f"loss-after-{s}"] = out / f"loss-after-seed{s}"
    return f


def _steps(out: Path, plan: DemoPlan) -> list[Step]:
    f = _folders(out, plan)
    lengths = ",".join(str(n) for n in plan.needle_lengths)
    depths = ",".join(str(d) for d in plan.needle_depths)
    needle_common = ["--lengths", lengths, "--depths", depths, "--needle", "ruler",
                     "--samples", str(plan.needle_samples),
                     "--max-new-tokens", str(plan.max_new_tokens)]
    loss_common = ["--data", str(f["data"]), "--buckets", plan.loss_buckets,
                   "--positions", plan.loss_positions]
    tokens = plan.steps * plan.batch_tokens
    first = plan.seeds[0]
    steps = [
        Step("demo corpus", f["corpus"],
             ["data", "demo-corpus", "--out", str(f["corpus"]), "--max-mb", f"{plan.corpus_mb:g}"],
             "a SlimPajama-layout corpus from text every Python install has"),
        Step("statistics", f["stats"], ["data", "stats", str(f["corpus"]), "--out", str(f["stats"])],
             "per-domain token shares and long-document shares of the corpus"),
        Step("mixture", f["data"],
             ["data", "build", str(f["corpus"]), "--out", str(f["data"]), "--strategy",
              "per_source", "--tokens", str(tokens), "--seq-len", str(plan.seq_len),
              "--eval-tokens", plan.eval_tokens, "--eval-fraction", f"{plan.eval_fraction:g}",
              "--eval-seq-len", str(plan.eval_seq_len)],
             f"per-source length upsampling in {plan.seq_len:,}-token rows, and held-out "
             f"documents in {plan.eval_seq_len:,}-token rows that no training row holds"),
        Step("loss before", f["loss-before"],
             ["eval", "loss", "--model", MODEL, "--out", str(f["loss-before"]), *loss_common],
             "held-out loss by position bucket, model as shipped"),
        Step("needle before", f["needle-before"],
             ["eval", "needle", "--model", MODEL, "--out", str(f["needle-before"]),
              *needle_common, "--trained-length", str(NATIVE_CONTEXT)],
             f"{MODEL} as shipped (8K context, RoPE base 1e5), lengths {lengths}"),
    ]
    for s in plan.seeds:
        train, loss = f[f"train-{s}"], f[f"loss-after-{s}"]
        steps += [
            Step(f"train (seed {s})", train,
                 ["train", "--data", str(f["data"]), "--model", MODEL, "--out", str(train),
                  "--steps", str(plan.steps), "--seq-len", str(plan.seq_len),
                  "--batch-tokens", str(plan.batch_tokens), "--seed", str(s),
                  "--rope-theta", f"{plan.rope_theta:g}", "--lr", f"{plan.lr:g}",
                  "--precision", plan.precision, "--no-checkpointing"],
                 f"continual pretraining, {plan.steps} steps x {plan.batch_tokens:,} tokens, "
                 f"RoPE base {plan.rope_theta:g}, lr {plan.lr:g}, seed {s}"),
            Step(f"loss after (seed {s})", loss,
                 ["eval", "loss", "--model", str(train / "final"), "--out", str(loss),
                  *loss_common],
                 "held-out loss of the trained model on the same documents"),
        ]
    steps.append(
        Step("needle after", f["needle-after"],
             ["eval", "needle", "--model", str(f[f"train-{first}"] / "final"),
              "--out", str(f["needle-after"]), *needle_common,
              "--trained-length", str(max(NATIVE_CONTEXT, plan.seq_len))],
             f"the model trained with seed {first} on the same needles"))
    return steps


def stage_app() -> typer.Typer:
    """The stage commands the demo runs (``data``, ``train``, ``eval``), as ``longctx`` has them.

    Registered by :mod:`longctx.stage_cli`, as for ``longctx``; not imported from
    ``longctx.cli``, which registers this module's ``demo`` command (a cycle).
    """
    from longctx.stage_cli import add_stage_commands

    app = typer.Typer(name="longctx", add_completion=False, pretty_exceptions_enable=False)
    add_stage_commands(app)
    return app


def run_cli(argv: Sequence[str], app: typer.Typer | None = None) -> None:
    """Run one ``longctx`` command in-process; usage errors become a LongctxError."""
    app = app or stage_app()
    try:
        app(args=list(argv), standalone_mode=False)
    except typer.TyperException as e:  # usage errors: a flag this checkout does not know
        raise DemoError(f"`longctx {' '.join(argv)}`: {e.format_message()}") from None


def run_demo(out: Path, plan: DemoPlan, console: Console | None = None) -> Path:
    """Run every step into ``out``, write ``demo.json`` and ``report.html``; return the report."""
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    steps = _steps(out, plan)
    mode = "quick" if plan.quick_mode else "full"
    console.rule(f"[bold]longctx demo ({mode}) → {out}")
    timings: list[tuple[str, str, float]] = []
    t_all = time.perf_counter()
    for i, step in enumerate(steps, 1):
        before = manifest_bytes(step.folder)
        console.print(f"\n[bold cyan][{i}/{len(steps) + 1}] {step.name}[/]: {step.what}")
        console.print(f"[dim]$ longctx {' '.join(step.argv)}[/]", highlight=False)
        t0 = time.perf_counter()
        try:
            run_cli(step.argv)
        except NotImplementedError:
            raise DemoError(
                f"demo step '{step.name}' cannot run: `longctx {' '.join(step.argv[:2])}` is "
                "not implemented in this checkout yet"
            ) from None
        except LongctxError as e:
            raise DemoError(f"demo step '{step.name}' failed: {e}") from None
        dt = time.perf_counter() - t0
        reused = before is not None and manifest_bytes(step.folder) == before
        timings.append((step.name, "reused" if reused else "ran", dt))
        console.print(f"[green]✓ {step.name}[/] ({'reused' if reused else f'{dt:.1f} s'})")
    summary = summarize(out, plan)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"\n[bold cyan][{len(steps) + 1}/{len(steps) + 1}] report[/]")
    from longctx.report.html import write_report

    report = out / "report.html"
    t0 = time.perf_counter()
    images = write_report([out], report, title=f"longctx demo ({mode})")
    timings.append(("report", "ran", time.perf_counter() - t0))
    _timing_table(console, timings, time.perf_counter() - t_all)
    console.rule("[bold]what this demo measured")
    for line in summary["headline"]:
        console.print(line, highlight=False)
    console.print(f"\n[bold green]Report:[/] {report.resolve()} ({images} images)")
    return report


# ---------------------------------------------------------------- what the run measured


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _needle_trials(needle: dict[str, Any], length: int | None = None) -> dict[str, float]:
    """Headline score of every needle (cell x sample), keyed by length:depth:sample."""
    out = {}
    for c in needle.get("cells") or []:
        if length is not None and c.get("length") != length:
            continue
        trials = c.get("samples") or [c]
        head = needle.get("headline", "ruler")
        for k, t in enumerate(trials):
            out[f"{c['length']}:{c['depth']}:{k}"] = float(t["scores"][head])
    return out


def _needle_difference(before: dict[str, Any], after: dict[str, Any], length: int) -> dict:
    """after − before accuracy at one length over the same needles, paired bootstrap."""
    a, b = _needle_trials(before, length), _needle_trials(after, length)
    keys = sorted(set(a) & set(b))
    diffs = [b[k] - a[k] for k in keys]
    mean_a = sum(a[k] for k in keys) / len(keys) if keys else None
    mean_b = sum(b[k] for k in keys) / len(keys) if keys else None
    iv = mean_interval(diffs)
    return {
        "length": length, "needles": len(keys), "before": mean_a, "after": mean_b,
        "difference": None if mean_a is None else mean_b - mean_a, "interval95": iv,
        "before_interval95": mean_interval([a[k] for k in keys]),
        "after_interval95": mean_interval([b[k] for k in keys]),
        "beyond_noise": bool(iv and (iv[0] > 0 or iv[1] < 0)),
    }


def summarize(out: Path, plan: DemoPlan) -> dict[str, Any]:
    """What the run measured, from its output files only: loss and needle before/after with
    their noise bands, and the scale of this training against the paper's."""
    f = _folders(out, plan)
    before = _load(f["loss-before"] / "loss.json") or {}
    afters = {s: _load(f[f"loss-after-{s}"] / "loss.json") or {} for s in plan.seeds}
    train = _load(f[f"train-{plan.seeds[0]}"] / "manifest.json") or {}
    trained_tokens = int(train.get("tokens") or 0)
    loss_rows = []
    for bucket in before.get("buckets") or []:
        per_seed = {s: paired_loss_difference(before, a, bucket) for s, a in afters.items()}
        diffs = [d["difference"] for d in per_seed.values() if d]
        sp = spread([(a.get("overall") or {}).get(bucket) for a in afters.values()])
        first = per_seed.get(plan.seeds[0])
        beyond = bool(first and first["beyond_noise"]
                      and all(d and d["beyond_noise"] for d in per_seed.values())
                      and (sp is None or abs(sum(diffs) / len(diffs)) > sp["range"]))
        loss_rows.append({
            "bucket": bucket,
            "before": (before.get("overall") or {}).get(bucket),
            "after": {str(s): (a.get("overall") or {}).get(bucket) for s, a in afters.items()},
            "difference": {str(s): d for s, d in per_seed.items()},
            "mean_difference": sum(diffs) / len(diffs) if diffs else None,
            "seed_spread": sp,
            "beyond_noise": beyond,
        })
    nb = _load(f["needle-before"] / "needle.json") or {}
    na = _load(f["needle-after"] / "needle.json") or {}
    needle_rows = [_needle_difference(nb, na, n) for n in plan.needle_lengths] if nb and na else []
    split = {before.get("split"), *(a.get("split") for a in afters.values())}
    scale = {
        "trained_tokens": trained_tokens, "train_seq_len": plan.seq_len, "steps": plan.steps,
        "lr": plan.lr, "rope_theta": plan.rope_theta,
        "paper": PAPER,
        "fraction_of_paper_tokens": trained_tokens / PAPER["tokens"],
        "fraction_of_paper_length": plan.seq_len / PAPER["seq_len"],
    }
    return {
        "model": MODEL,
        "loss_split": sorted(x for x in split if x),
        "loss": loss_rows,
        "needle": needle_rows,
        "scale": scale,
        "seeds": plan.seeds,
        "headline": headline_lines(loss_rows, needle_rows, scale, sorted(x for x in split if x),
                                   before, plan),
    }


def _fmt_iv(iv: list[float] | None, digits: int = 3) -> str:
    return "n/a (too few documents)" if not iv else f"[{iv[0]:+.{digits}f}, {iv[1]:+.{digits}f}]"


def _verdict(beyond: bool, diff: float | None, *, lower_is_better: bool) -> str:
    if not beyond or diff is None:
        return "within noise: not a result"
    better = (diff < 0) == lower_is_better
    return "beyond noise: " + ("better" if better else "worse")


def headline_lines(loss_rows: list[dict], needle_rows: list[dict], scale: dict[str, Any],
                   split: list[str], before: dict[str, Any], plan: DemoPlan) -> list[str]:
    """Plain sentences: each difference with its noise band, and the verdict it allows."""
    lines = []
    where = ("held-out documents (in no training row)" if split == ["heldout"] else
             "TRAINING rows (no held-out split: read these as fit, not generalisation)")
    n_docs = len((before.get("per_document") or {}).get("id") or [])
    lines.append(f"Loss: {MODEL} as shipped vs after continual pretraining, on {n_docs} {where}; "
                 f"noise: paired 95% bootstrap over those documents"
                 + (f", and the spread over {len(plan.seeds)} training seeds" if len(plan.seeds) > 1
                    else " (one training seed: seed-to-seed noise not measured)") + ".")
    for r in loss_rows:
        d0 = r["difference"].get(str(plan.seeds[0]))
        if r["before"] is None:
            lines.append(f"  positions {r['bucket']}: no held-out tokens there")
            continue
        if not d0:
            afters = ", ".join(f"{v:.3f}" for v in r["after"].values() if v is not None)
            lines.append(f"  positions {r['bucket']}: {r['before']:.3f} -> {afters}, but fewer "
                         "than 2 held-out documents reach these positions: noise unknown, not "
                         "a result")
            continue
        afters = ", ".join(f"{v:.3f}" for v in r["after"].values() if v is not None)
        sp = r["seed_spread"]
        spread_txt = f"; seed spread {sp['range']:.3f}" if sp else ""
        verdict = _verdict(r["beyond_noise"], r["mean_difference"], lower_is_better=True)
        lines.append(
            f"  positions {r['bucket']}: {r['before']:.3f} -> {afters} "
            f"(difference {r['mean_difference']:+.3f}, 95% interval {_fmt_iv(d0['interval95'])}"
            f"{spread_txt}): {verdict}"
        )
    for r in needle_rows:
        if r["before"] is None:
            continue
        verdict = _verdict(r["beyond_noise"], r["difference"], lower_is_better=False)
        lines.append(
            f"Needle (RULER) at {r['length']:,} tokens: {r['before']:.2f} -> {r['after']:.2f} of "
            f"{r['needles']} needles (difference {r['difference']:+.2f}, 95% interval "
            f"{_fmt_iv(r['interval95'], 2)}): {verdict}"
        )
    lines.append(
        f"Scale: {scale['trained_tokens']:,} training tokens at {scale['train_seq_len']:,} "
        f"tokens per row — {scale['fraction_of_paper_tokens']:.1e} of the paper's 5B tokens and "
        f"{scale['fraction_of_paper_length']:.3f} of its 80K length; this shows the pipeline and "
        "how to read its noise, not the paper's result. Held-out documents come from the "
        "training corpus's domains, so a lower loss also reflects adaptation to that text."
    )
    return lines


def _timing_table(console: Console, timings: list[tuple[str, str, float]], total: float) -> None:
    table = Table(title="demo steps")
    table.add_column("step")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    for name, status, dt in timings:
        table.add_row(name, status, f"{dt:.1f}")
    table.add_row("total", "", f"{total:.1f}")
    console.print(table)


@dataclass
class DemoConfig:
    """``longctx demo`` settings: flags only (the plan itself is :class:`DemoPlan`)."""

    out: Path = opt(Path("runs/demo"), "Folder for every stage's output and the report.",
                    flags=("--out", "-o"))
    quick: bool = opt(False, "Tiny grid, short sequences, 2 training steps (CI).",
                      flags=("--quick",))
    steps: int | None = opt(None, "Training steps (default 12 of two 1,024-token rows; "
                            "--quick: 2 of two 512-token rows).", min=1)
    rope_theta: float | None = opt(None, "RoPE base for continual pretraining (default 1e6; "
                                   "SmolLM2-135M has 1e5).", min=1.0)

    def plan(self) -> DemoPlan:
        plan = DemoPlan.quick() if self.quick else DemoPlan.full()
        if self.steps is not None:
            plan.steps = self.steps
        if self.rope_theta is not None:
            plan.rope_theta = self.rope_theta
        return plan


def _demo(cfg: DemoConfig) -> None:
    """Run the whole pipeline offline on embedded defaults (demo corpus, SmolLM2-135M):
    corpus -> statistics -> per-source length-upsampled mixture with held-out documents ->
    loss and needle before training -> continual pretraining with an enlarged RoPE base ->
    loss and needle after -> what changed beyond noise -> report.
    Stages that already finished in --out are reused."""
    run_demo(cfg.out, cfg.plan())


demo_command = flag_command(DemoConfig, _demo)
