"""The ``longctx`` command: one sub-command per pipeline stage.

Every command is registered here, so no stage imports another stage's commands: the stage
groups (``data``, ``train``, ``eval``; :mod:`longctx.stage_cli`), then ``plan``, ``report``, ``demo``,
``ablate`` and ``version``. User-facing errors (:class:`longctx.errors.LongctxError`) and
usage errors become a one-line message and exit code 2 instead of a traceback
(:func:`longctx.cliopts.run_app`, shared with ``python -m longctx.train``). Stage modules
import heavy libraries (torch) inside their commands, so ``longctx --help`` stays fast.
"""

from __future__ import annotations

import typer

from longctx import __version__
from longctx.ablate.cli import ablate_command
from longctx.cliopts import run_app
from longctx.demo import demo_command
from longctx.report.cli import report_command
from longctx.stage_cli import add_stage_commands
from longctx.train.plan import plan_command

app = typer.Typer(
    name="longctx",
    help="Long-context continual pretraining: data -> mix -> pack -> train -> eval -> report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
add_stage_commands(app)
app.command("plan")(plan_command)
app.command("report")(report_command)
app.command("demo")(demo_command)
app.command("ablate")(ablate_command)


@app.command("version")
def version() -> None:
    """Print the longctx version."""
    typer.echo(__version__)


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv)
