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


class DemoError(LongctxError):
    """A demo step could not run; the message names the step and the command."""


@dataclass
class DemoPlan:
    """Sizes chosen so the full demo fits 20 minutes on 2 CPU cores (quick: a few minutes)."""

    data_tokens: str = "64K"
    seq_len: int = 16384
    train_seq_len: int = 8192
    steps: int = 6
    rope_theta: float = 1e6
    lr: float = 2e-5
    needle_lengths: list[int] = field(default_factory=lambda: [4096, 8192, 12288, 16384])
    needle_depths: list[int] = field(default_factory=lambda: [0, 50, 100])
    loss_buckets: str = "0-4096,4096-16384"
    loss_positions: str = "1024,4096,8192,16384"
    precision: str = "bf16"
    quick_mode: bool = False

    @classmethod
    def full(cls) -> DemoPlan:
        return cls()

    @classmethod
    def quick(cls) -> DemoPlan:
        return cls(
            data_tokens="8K",
            seq_len=2048,
            train_seq_len=1024,
            steps=2,
            needle_lengths=[512, 1024],
            needle_depths=[0, 100],
            loss_buckets="0-512,512-2048",
            loss_positions="256,1024,2048",
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
    needle_common = ["--lengths", lengths, "--depths", depths, "--needle", "ruler"]
    loss_common = ["--data", str(data), "--buckets", plan.loss_buckets,
                   "--positions", plan.loss_positions]
    return [
        Step("demo corpus", corpus, ["data", "demo-corpus", "--out", str(corpus)],
             "a SlimPajama-layout corpus from text every Python install has"),
        Step("statistics", stats, ["data", "stats", str(corpus), "--out", str(stats)],
             "per-domain token shares and long-document shares of the corpus"),
        Step("mixture", data,
             ["data", "build", str(corpus), "--out", str(data), "--strategy", "per_source",
              "--tokens", plan.data_tokens, "--seq-len", str(plan.seq_len)],
             f"per-source length upsampling, packed into {plan.seq_len:,}-token rows"),
        Step("needle before", out / "needle-before",
             ["eval", "needle", "--model", MODEL, "--out", str(out / "needle-before"),
              *needle_common],
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
              *needle_common],
             "the continually pretrained model on the same grid"),
        Step("loss after", out / "loss-after",
             ["eval", "loss", "--model", str(trained), "--out", str(out / "loss-after"),
              *loss_common],
             "per-domain loss of the trained model on the same rows"),
    ]


def _finished(folder: Path) -> bool:
    try:
        m = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and m.get("status") == "done"


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
        reused = _finished(step.folder)
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
        timings.append((step.name, "reused" if reused else "ran", dt))
        console.print(f"[green]✓ {step.name}[/] ({'reused' if reused else f'{dt:.1f} s'})")
    console.print(f"\n[bold cyan][{len(steps) + 1}/{len(steps) + 1}] report[/]")
    from longctx.report.cli import write_report

    report = out / "report.html"
    t0 = time.perf_counter()
    images = write_report([out], report, title=f"longctx demo ({mode})")
    timings.append(("report", "ran", time.perf_counter() - t0))
    _summary(console, out, timings, time.perf_counter() - t_all)
    console.print(f"\n[bold green]Report:[/] {report.resolve()} ({images} images)")
    return report


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
