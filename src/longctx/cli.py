"""The ``longctx`` command: one sub-command per pipeline stage.

Each stage owns its commands in ``<stage>/cli.py``; this file only assembles them and turns
user-facing errors (:class:`longctx.errors.LongctxError`) and usage errors into a one-line
message and exit code 2 instead of a traceback (:func:`longctx.cliopts.run_app`, shared with
``python -m longctx.train``). Stage modules import heavy libraries (torch) inside their
commands, so ``longctx --help`` stays fast.
"""

from __future__ import annotations

import typer

from longctx import __version__
from longctx.ablate.cli import ablate_command
from longctx.cliopts import run_app
from longctx.data.cli import app as data_app
from longctx.demo import demo_command
from longctx.eval.cli import app as eval_app
from longctx.report.cli import report_command
from longctx.train.cli import train_command

app = typer.Typer(
    name="longctx",
    help="Long-context continual pretraining: data -> mix -> pack -> train -> eval -> report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data", help="Corpus readers, statistics, mixtures, packed shards, exports.")
app.command("train")(train_command)
app.add_typer(eval_app, name="eval", help="Needle-in-a-haystack, loss by position and domain, BookQA.")
app.command("report")(report_command)
app.command("demo")(demo_command)
app.command("ablate")(ablate_command)


@app.command("version")
def version() -> None:
    """Print the longctx version."""
    typer.echo(__version__)


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv)
