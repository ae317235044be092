"""The pipeline stages' commands (``data``, ``train``, ``eval``), registered in one place.

Each stage declares its commands in its own ``commands.py`` / ``cli.py`` and imports no other
stage's: ``data build`` and ``data export`` come from pack/commands.py and join the ``data``
group here. ``longctx`` (cli.py) adds these to its command tree, and the demo
(:func:`longctx.demo.stage_app`) runs them in-process; the demo cannot import cli.py, which
registers the demo command (a cycle). A stage's modules are imported only when its group is
registered, so one command does not pay for the others' imports.
"""

from __future__ import annotations

import typer

STAGES = ("data", "train", "eval")


def data_app() -> typer.Typer:
    """``longctx data ...``: corpus and statistics (data/), packed mixtures and exports (pack/)."""
    from longctx.data import commands as data_commands
    from longctx.pack import commands as pack_commands

    app = typer.Typer(no_args_is_help=True)
    app.command("demo-corpus")(data_commands.demo_corpus_command)
    app.command("stats")(data_commands.stats_command)
    app.command("build")(pack_commands.build_command)
    app.command("export")(pack_commands.export_command)
    return app


def add_stage_commands(app: typer.Typer, only: str | None = None) -> None:
    """Register ``data``, ``train`` and ``eval`` on ``app`` (or just the stage ``only``)."""
    if only in (None, "data"):
        app.add_typer(data_app(), name="data",
                      help="Corpus readers, statistics, mixtures, packed shards, exports.")
    if only in (None, "train"):
        from longctx.train.cli import train_command

        app.command("train")(train_command)
    if only in (None, "eval"):
        from longctx.eval.cli import app as eval_app

        app.add_typer(eval_app, name="eval",
                      help="Needle-in-a-haystack, RULER, loss by position and domain, BookQA, "
                      "lm-evaluation-harness.")
