"""``longctx eval ...``: needle, loss, bookqa.

Every command takes typed flags, a YAML ``--config FILE`` and repeatable ``--set key=value``
overrides (defaults < YAML < flags < --set). Heavy imports (torch, transformers) happen
inside the run functions so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from longctx.config import build_config, explicit_cli_values
from longctx.eval.bookqa import BookQAConfig
from longctx.eval.loss import LossConfig
from longctx.eval.needle import NeedleConfig
from longctx.stage import is_done, run_hash

app = typer.Typer(no_args_is_help=True)

_N, _L, _B = NeedleConfig(), LossConfig(), BookQAConfig()
CONFIG_HELP = "YAML file with config keys (flags and --set override it)."
SET_HELP = "Override one config key, e.g. --set max_new_tokens=16 (repeatable)."
MODEL_HELP = "Model: 'smollm2-135m' (embedded) or a local HF model folder."
ROPE_HELP = "Override the RoPE base (rope_theta) before the model is built."
DTYPE_HELP = "auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16."
DEVICE_HELP = "auto, cpu, cuda or cuda:N."


def _csv(values: list[Any]) -> str:
    return ",".join(str(v) for v in values)


def _build(
    cls: type, ctx: typer.Context, values: dict[str, Any], config: Path | None, overrides: list[str]
) -> Any:
    return build_config(
        cls, config_file=config, cli=explicit_cli_values(ctx, values), overrides=overrides or []
    )


def _skip_if_done(out: Path, cfg: Any, force: bool) -> bool:
    if not force and is_done(out, run_hash(cfg)):
        typer.echo(f"{out}: already done with this config (use --force to rerun)")
        return True
    return False


@app.command("needle")
def needle_command(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Output folder (needle.json, needle.png, cells.jsonl, manifest.json)."
        ),
    ],
    model: Annotated[str, typer.Option("--model", help=MODEL_HELP)] = _N.model,
    lengths: Annotated[
        str, typer.Option("--lengths", help="Comma-separated total prompt lengths in tokens.")
    ] = _csv(_N.lengths),
    depths: Annotated[
        str, typer.Option("--depths", help="Comma-separated needle depths in percent (0..100).")
    ] = _csv(_N.depths),
    paper_grid: Annotated[
        bool,
        typer.Option(
            "--paper-grid",
            help="The paper's grid: 40 lengths "
            "1000..128000 x 10 depths 0..100 (overrides lengths/depths).",
        ),
    ] = False,
    haystack: Annotated[
        str,
        typer.Option(
            "--haystack",
            help="Folder of .txt files (read in sorted "
            "order), a .txt file, or RULER's JSON; default: the Python "
            "reference manual shipped with Python (offline).",
        ),
    ] = "",
    needle: Annotated[
        str,
        typer.Option(
            "--needle",
            help="paper (San Francisco sandwich, "
            "word-recall headline) or ruler (7-digit magic number, "
            "containment headline).",
        ),
    ] = _N.needle,
    headline: Annotated[
        str,
        typer.Option(
            "--headline",
            help="Headline scorer: ruler, paper_recall or rouge1 (default: the needle's own).",
        ),
    ] = "",
    rope_theta: Annotated[float | None, typer.Option("--rope-theta", help=ROPE_HELP)] = None,
    trained_length: Annotated[
        int | None,
        typer.Option(
            "--trained-length", help="Draw the dashed trained-length line at this length."
        ),
    ] = None,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Greedy decoding budget per cell.")
    ] = _N.max_new_tokens,
    stop_at_newline: Annotated[
        bool,
        typer.Option(
            "--stop-at-newline/--no-stop-at-newline",
            help="Stop once the first answer line is complete.",
        ),
    ] = _N.stop_at_newline,
    dtype: Annotated[str, typer.Option("--dtype", help=DTYPE_HELP)] = _N.dtype,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = _N.device,
    seed: Annotated[int, typer.Option("--seed", help="Seed for RULER keys and values.")] = _N.seed,
    samples: Annotated[
        int,
        typer.Option("--samples", help="RULER needles per cell (another key and value each); "
                     "the cell score is their mean and needle.json gets a bootstrap interval."),
    ] = _N.samples,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Rerun even if the folder is done "
            "(finished cells in cells.jsonl are still reused).",
        ),
    ] = False,
    config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
) -> None:
    """Needle-in-a-haystack over a length x depth grid (paper protocol or RULER needle)."""
    from longctx.eval.needle import run_needle

    values = dict(
        model=model,
        lengths=lengths,
        depths=depths,
        paper_grid=paper_grid,
        haystack=haystack,
        needle=needle,
        headline=headline,
        rope_theta=rope_theta,
        trained_length=trained_length,
        max_new_tokens=max_new_tokens,
        stop_at_newline=stop_at_newline,
        dtype=dtype,
        device=device,
        seed=seed,
        samples=samples,
    )
    cfg = _build(NeedleConfig, ctx, values, config, set_)
    if _skip_if_done(out, cfg, force):
        return
    result = run_needle(cfg, out, force=force)
    typer.echo(
        f"needle: {len(result['cells'])} cells, average {result['headline']} "
        f"{result['average']:.3f} -> {out / 'needle.json'}, {out / 'needle.png'}"
    )


@app.command("loss")
def loss_command(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="Packed data folder (from data build).")],
    out: Annotated[
        Path, typer.Option("--out", help="Output folder (loss.json, loss.png, manifest.json).")
    ],
    model: Annotated[str, typer.Option("--model", help=MODEL_HELP)] = _L.model,
    buckets: Annotated[
        str,
        typer.Option(
            "--buckets", help="Comma-separated position buckets LO-HI (LO <= position < HI)."
        ),
    ] = _csv(_L.buckets),
    positions: Annotated[
        str,
        typer.Option(
            "--positions", help="Loss@P positions; Loss@P averages positions in [previous P, P)."
        ),
    ] = _csv(_L.positions),
    max_rows: Annotated[
        int | None,
        typer.Option("--max-rows", help="Evaluate at most N rows, spread evenly over the data."),
    ] = None,
    attention: Annotated[
        str,
        typer.Option(
            "--attention",
            help="doc: each document piece "
            "is its own sequence; row: the whole packed row is causal.",
        ),
    ] = _L.attention,
    rope_theta: Annotated[float | None, typer.Option("--rope-theta", help=ROPE_HELP)] = None,
    logits_chunk: Annotated[
        int,
        typer.Option("--logits-chunk", help="Positions per LM-head chunk (bounds logits memory)."),
    ] = _L.logits_chunk,
    dtype: Annotated[str, typer.Option("--dtype", help=DTYPE_HELP)] = _L.dtype,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = _L.device,
    force: Annotated[
        bool, typer.Option("--force", help="Rerun even if the folder is done.")
    ] = False,
    config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
) -> None:
    """Per-domain loss by position bucket (Table 5) and Loss@position (Fig. 3)."""
    from longctx.eval.loss import run_loss

    values = dict(
        model=model,
        data=str(data),
        buckets=buckets,
        positions=positions,
        max_rows=max_rows,
        attention=attention,
        rope_theta=rope_theta,
        logits_chunk=logits_chunk,
        dtype=dtype,
        device=device,
    )
    cfg = _build(LossConfig, ctx, values, config, set_)
    if _skip_if_done(out, cfg, force):
        return
    result = run_loss(cfg, out, force=force)
    overall = ", ".join(f"{k}: {v:.3f}" for k, v in result["overall"].items() if v is not None)
    typer.echo(f"loss: {result['tokens']['scored']} tokens ({overall}) -> {out / 'loss.json'}")


@app.command("bookqa")
def bookqa_command(
    ctx: typer.Context,
    data: Annotated[
        Path,
        typer.Option(
            "--data", help="InfiniteBench longbook_qa_eng.jsonl (fields context, input, answer)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (bookqa.json, manifest.json).")],
    model: Annotated[str, typer.Option("--model", help=MODEL_HELP)] = _B.model,
    truncate: Annotated[
        int, typer.Option("--truncate", help="Middle-truncate prompts to this many tokens.")
    ] = _B.truncate,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Greedy decoding budget per question.")
    ] = _B.max_new_tokens,
    max_items: Annotated[
        int | None, typer.Option("--max-items", help="Answer only the first N.")
    ] = None,
    chat: Annotated[
        str,
        typer.Option(
            "--chat",
            help="auto (use the model's chat template when it has one), on, or off "
            "(complete 'Answer:' like a base model).",
        ),
    ] = _B.chat,
    rope_theta: Annotated[float | None, typer.Option("--rope-theta", help=ROPE_HELP)] = None,
    dtype: Annotated[str, typer.Option("--dtype", help=DTYPE_HELP)] = _B.dtype,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = _B.device,
    force: Annotated[
        bool, typer.Option("--force", help="Rerun even if the folder is done.")
    ] = False,
    config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
) -> None:
    """InfiniteBench En.QA (BookQA) with the paper's word-level F1 (qa_f1_score)."""
    from longctx.eval.bookqa import run_bookqa

    values = dict(
        model=model,
        data=str(data),
        chat=chat,
        truncate=truncate,
        max_new_tokens=max_new_tokens,
        max_items=max_items,
        rope_theta=rope_theta,
        dtype=dtype,
        device=device,
    )
    cfg = _build(BookQAConfig, ctx, values, config, set_)
    if _skip_if_done(out, cfg, force):
        return
    result = run_bookqa(cfg, out, force=force)
    typer.echo(f"bookqa: {result['n']} items, F1 {result['f1']:.3f} -> {out / 'bookqa.json'}")
