"""``longctx demo``: the whole pipeline on embedded defaults, offline, on CPU.

Each step runs a real ``longctx`` command in-process with an argument list, exactly as a
user would type it, so the demo exercises the same CLI contracts (flags, manifests, output
files). Stages skip themselves when their manifest says done, so a rerun of the demo reuses
finished work. A stage that is missing or fails stops the demo with a message naming it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from longctx.errors import LongctxError

MODEL = "smollm2-135m"
NATIVE_CONTEXT = 8192  # SmolLM2-135M's pretraining context


class DemoError(LongctxError):
    """A demo step could not run; the message names the step and the command."""


@dataclass
class DemoPlan:
    """Sizes chosen so the full demo fits 20 minutes on 2 CPU cores (quick: a few minutes).

    Measured here on 2 cores (mostly quiet): needle grid 2K/10K x 3 depths 104 s, loss on a
    10,240-token row about 20 s, one training step at 10,240 tokens 256 s in fp32 (bf16
    autocast was slower here: 30 vs 40 tokens/s), so the defaults total about 15 minutes.
    """

    corpus_mb: float = 3.0
    seq_len: int = 10240  # packed rows; beyond SmolLM2-135M's 8K pretraining context
    data_rows: int = 4
    train_seq_len: int = 10240
    steps: int = 2
    rope_theta: float = 1e6
    lr: float = 2e-5
    needle_lengths: list[int] = field(default_factory=lambda: [2048, 10240])
    needle_depths: list[int] = field(default_factory=lambda: [0, 50, 100])
    max_new_tokens: int = 12  # a 7-digit RULER value is 7 digit tokens in SmolLM2
    loss_buckets: str = "0-4096,4096-10240"
    loss_positions: str = "1024,4096,10240"
    loss_rows: int = 4  # every row: one 10K row holds only a few of the six domains
    precision: str = "fp32"
    quick_mode: bool = False

    @classmethod
    def full(cls) -> DemoPlan:
        return cls()

    @classmethod
    def quick(cls) -> DemoPlan:
        return cls(
            corpus_mb=1.0,
            seq_len=2048,
            data_rows=2,
            train_seq_len=1024,
            steps=2,
            needle_lengths=[512, 1024],
            needle_depths=[0, 100],
            loss_buckets="0-512,512-2048",
            loss_positions="256,1024,2048",
            loss_rows=1,
            quick_mode=True,
        )


@dataclass
class Step:
    name: str
    folder: Path
    argv: list[str]
    what: str


def _steps(out: Path, plan: DemoPlan) -> list[Step]:
    corpus, stats, data = out / "corpus", out / "stats", out / "data"
    train, trained = out / "train", out / "train" / "final"
    lengths = ",".join(str(n) for n in plan.needle_lengths)
    depths = ",".join(str(d) for d in plan.needle_depths)
    needle_common = ["--lengths", lengths, "--depths", depths, "--needle", "ruler",
                     "--max-new-tokens", str(plan.max_new_tokens)]
    loss_common = ["--data", str(data), "--buckets", plan.loss_buckets,
                   "--positions", plan.loss_positions, "--max-rows", str(plan.loss_rows)]
    return [
        Step("demo corpus", corpus,
             ["data", "demo-corpus", "--out", str(corpus), "--max-mb", f"{plan.corpus_mb:g}"],
             "a SlimPajama-layout corpus from text every Python install has"),
        Step("statistics", stats, ["data", "stats", str(corpus), "--out", str(stats)],
             "per-domain token shares and long-document shares of the corpus"),
        Step("mixture", data,
             ["data", "build", str(corpus), "--out", str(data), "--strategy", "per_source",
              "--tokens", str(plan.data_rows * plan.seq_len), "--seq-len", str(plan.seq_len)],
             f"per-source length upsampling, packed into {plan.seq_len:,}-token rows"),
        Step("needle before", out / "needle-before",
             ["eval", "needle", "--model", MODEL, "--out", str(out / "needle-before"),
              *needle_common, "--trained-length", str(NATIVE_CONTEXT)],
             f"{MODEL} as shipped (8K context, RoPE base 1e5), lengths {lengths}"),
        Step("loss before", out / "loss-before",
             ["eval", "loss", "--model", MODEL, "--out", str(out / "loss-before"), *loss_common],
             "per-domain loss by position bucket, model as shipped"),
        Step("train", train,
             ["train", "--data", str(data), "--model", MODEL, "--out", str(train),
              "--steps", str(plan.steps), "--seq-len", str(plan.train_seq_len),
              "--rope-theta", f"{plan.rope_theta:g}", "--lr", f"{plan.lr:g}",
              "--precision", plan.precision],
             f"continual pretraining, {plan.steps} steps at {plan.train_seq_len:,} tokens, "
             f"RoPE base {plan.rope_theta:g}"),
        Step("needle after", out / "needle-after",
             ["eval", "needle", "--model", str(trained), "--out", str(out / "needle-after"),
              *needle_common, "--trained-length", str(max(NATIVE_CONTEXT, plan.train_seq_len))],
             "the continually pretrained model on the same grid"),
        Step("loss after", out / "loss-after",
             ["eval", "loss", "--model", str(trained), "--out", str(out / "loss-after"),
              *loss_common],
             "per-domain loss of the trained model on the same rows"),
    ]


def _manifest_bytes(folder: Path) -> bytes | None:
    try:
        return (folder / "manifest.json").read_bytes()
    except OSError:
        return None


def run_cli(argv: Sequence[str]) -> None:
    """Run one ``longctx`` command in-process; usage errors become a LongctxError."""
    import typer

    from longctx.cli import app

    try:
        app(args=list(argv), standalone_mode=False)
    except typer.TyperException as e:  # usage errors: a flag this checkout does not know
        raise DemoError(f"`longctx {' '.join(argv)}`: {e.format_message()}") from None


def run_demo(out: Path, plan: DemoPlan, console: Console | None = None) -> Path:
    """Run every step into ``out`` and write ``out/report.html``; returns the report path."""
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    steps = _steps(out, plan)
    mode = "quick" if plan.quick_mode else "full"
    console.rule(f"[bold]longctx demo ({mode}) → {out}")
    timings: list[tuple[str, str, float]] = []
    t_all = time.perf_counter()
    for i, step in enumerate(steps, 1):
        before = _manifest_bytes(step.folder)
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
        # a stage that skipped itself leaves its finished manifest untouched
        reused = before is not None and _manifest_bytes(step.folder) == before
        timings.append((step.name, "reused" if reused else "ran", dt))
        console.print(f"[green]✓ {step.name}[/] ({'reused' if reused else f'{dt:.1f} s'})")
        _show(console, step)
    console.print(f"\n[bold cyan][{len(steps) + 1}/{len(steps) + 1}] report[/]")
    from longctx.report.cli import write_report

    report = out / "report.html"
    t0 = time.perf_counter()
    images = write_report([out], report, title=f"longctx demo ({mode})")
    timings.append(("report", "ran", time.perf_counter() - t0))
    _summary(console, out, timings, time.perf_counter() - t_all)
    console.print(f"\n[bold green]Report:[/] {report.resolve()} ({images} images)")
    return report


def _load(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _show(console: Console, step: Step) -> None:
    """A few headline numbers of the step's output, read from its output files."""
    f = step.folder
    if (n := _load(f / "needle.json")) and isinstance(n.get("cells"), list):
        by_len: dict[int, list[float]] = {}
        for c in n["cells"]:
            by_len.setdefault(int(c["length"]), []).append(float(c["score"]))
        per = ", ".join(f"{k:,}: {sum(v) / len(v):.2f}" for k, v in sorted(by_len.items()))
        console.print(f"needle average {float(n.get('average', 0)):.3f} (by length {per})")
    elif (loss := _load(f / "loss.json")) and isinstance(loss.get("overall"), dict):
        vals = ", ".join(f"{k}: {v:.3f}" for k, v in loss["overall"].items() if v is not None)
        console.print(f"mean token loss by position ({vals}), on rows of the training mixture")
    elif (f / "metrics.jsonl").is_file():
        rows = [json.loads(x) for x in (f / "metrics.jsonl").read_text().splitlines() if x]
        if rows:
            console.print(f"loss {rows[0]['loss']:.3f} (step 1) -> {rows[-1]['loss']:.3f} "
                          f"(step {rows[-1]['step']})")


def _summary(console: Console, out: Path, timings: list[tuple[str, str, float]],
             total: float) -> None:
    table = Table(title="demo steps")
    table.add_column("step")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    for name, status, dt in timings:
        table.add_row(name, status, f"{dt:.1f}")
    table.add_row("total", "", f"{total:.1f}")
    console.print(table)
    for label in ("needle-before", "needle-after"):
        try:
            n = json.loads((out / label / "needle.json").read_text())
            console.print(f"{label}: average {float(n['average']):.3f} ({n.get('headline')})")
        except (OSError, ValueError, KeyError, TypeError):
            pass
